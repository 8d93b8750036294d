//! Writing to stdout and stderr without panicking on a closed pipe.

use std::io::Write;

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

/// The records as a table; the generation column comes from `blueprint`
/// (the current target) where it lists the zone.
pub(crate) fn records_table(
    records: &[baton_types::NexusRecord],
    blueprint: Option<&baton_types::Blueprint>,
) -> String {
    let generation = |id| {
        blueprint
            .and_then(|bp| bp.nexus_zones().find(|z| z.zone_id == id))
            .map_or("-".to_owned(), |z| z.nexus_generation.to_string())
    };
    let mut out = format!(
        "{:<36}  {:<3}  {:<8}  {}",
        "NEXUS ID", "GEN", "STATE", "LAST DRAINED BLUEPRINT"
    );
    if records.is_empty() {
        out.push_str("\n(no records)");
    }
    for r in records {
        out.push_str(&format!(
            "\n{:<36}  {:<3}  {:<8}  {}",
            r.nexus_id,
            generation(r.nexus_id),
            r.state,
            r.last_drained_blueprint_id
                .map_or("-".to_owned(), |id| id.to_string())
        ));
    }
    out
}
