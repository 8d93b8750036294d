//! Writing to stdout and stderr without panicking on a closed pipe, and
//! the tables the commands print.

use std::io::Write;

use baton_types::{Blueprint, NexusRecord};
use tabled::settings::{Padding, Style};
use tabled::{Table, Tabled};

/// Writes `text` and a newline to stdout. A reader that went away (a
/// closed pipe) is not an error worth a panic.
pub(crate) fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Writes a JSON document to stdout, alone.
pub(crate) fn json(value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value)
        .expect("output types always serialize");
    line(&text);
}

/// Writes a JSON document to stdout on one line (a stream of them).
pub(crate) fn json_line(value: &impl serde::Serialize) {
    let text =
        serde_json::to_string(value).expect("output types always serialize");
    line(&text);
}

/// Writes a progress note to stderr (what a wait waits on).
pub(crate) fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// Writes an error message to stderr.
pub(crate) fn error(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {text}");
}

/// `rows` as a borderless table with a header line; `empty` names what
/// is missing when there are no rows.
pub(crate) fn table<R: Tabled>(
    rows: impl IntoIterator<Item = R>,
    empty: &str,
) -> String {
    let rows: Vec<R> = rows.into_iter().collect();
    let none = rows.is_empty();
    let table = Table::new(rows)
        .with(Style::empty())
        .with(Padding::new(0, 2, 0, 0))
        .to_string();
    // The last column is padded to its width too; nobody wants that.
    let mut text: String = table
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    if none {
        text.push_str(&format!("\n({empty})"));
    }
    text
}

/// The generation the blueprint gives Nexus `id`, if it lists the zone.
pub(crate) fn generation_of(
    blueprint: Option<&Blueprint>,
    id: baton_uuid_kinds::OmicronZoneUuid,
) -> Option<u64> {
    blueprint
        .and_then(|bp| bp.nexus_zones().find(|z| z.zone_id == id))
        .map(|z| z.nexus_generation.get())
}

#[derive(Tabled)]
struct RecordRow {
    #[tabled(rename = "NEXUS ID")]
    nexus_id: String,
    #[tabled(rename = "GEN")]
    generation: String,
    #[tabled(rename = "STATE")]
    state: &'static str,
    #[tabled(rename = "LAST DRAINED BLUEPRINT")]
    last_drained: String,
}

/// The records as a table; the generation column comes from `blueprint`
/// (the current target) where it lists the zone.
pub(crate) fn records_table(
    records: &[NexusRecord],
    blueprint: Option<&Blueprint>,
) -> String {
    table(
        records.iter().map(|r| RecordRow {
            nexus_id: r.nexus_id.to_string(),
            generation: generation_of(blueprint, r.nexus_id)
                .map_or("-".to_owned(), |g| g.to_string()),
            state: r.state.as_str(),
            last_drained: r
                .last_drained_blueprint_id
                .map_or("-".to_owned(), |id| id.to_string()),
        }),
        "no records",
    )
}
