//! The named pieces the guarded statements are built from. Each piece is
//! written once; `PROTOCOL.md` says why each guard sits where it does.

use crate::notify::{CHANNEL, EventKind};

/// A common table expression: `name AS (body)`.
#[derive(Clone, Debug)]
pub(crate) struct Cte {
    name: &'static str,
    body: String,
}

impl Cte {
    pub(crate) fn new(name: &'static str, body: impl Into<String>) -> Cte {
        Cte {
            name,
            body: body.into(),
        }
    }
}

/// A statement of the shape every guarded write has: CTEs (reads, then
/// the one write) and a final `SELECT` of what the caller needs to tell
/// success from each refusal.
#[derive(Clone, Debug, Default)]
pub(crate) struct Guarded {
    ctes: Vec<Cte>,
    columns: Vec<String>,
}

impl Guarded {
    pub(crate) fn with(mut self, cte: Cte) -> Guarded {
        self.ctes.push(cte);
        self
    }

    pub(crate) fn column(mut self, column: impl Into<String>) -> Guarded {
        self.columns.push(column.into());
        self
    }

    /// Adds the announcement of `kind` (see [`announcement`]) when
    /// `announce` is on.
    pub(crate) fn announcing(
        self,
        announce: bool,
        changed: &'static str,
        kind: EventKind,
        nexus: &str,
    ) -> Guarded {
        if !announce {
            return self;
        }
        self.with(announcement(changed, kind, nexus))
            .column("(SELECT count(*) FROM notified) AS notified")
    }

    /// The whole text.
    pub(crate) fn render(&self) -> String {
        let ctes: Vec<String> = self
            .ctes
            .iter()
            .map(|cte| format!("{} AS (\n{}\n)", cte.name, indent(&cte.body)))
            .collect();
        format!(
            "WITH {}\nSELECT {}",
            ctes.join(", "),
            self.columns.join(",\n       ")
        )
    }
}

fn indent(body: &str) -> String {
    body.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The current target: the `bp_target` row with the highest version.
/// Reading it in the same statement as a record write is what orders the
/// write against a target change (`PROTOCOL.md`, "Only the current
/// target writes").
pub(crate) fn target() -> Cte {
    Cte::new(
        "target",
        "SELECT blueprint_id FROM bp_target ORDER BY version DESC LIMIT 1",
    )
}

/// The executing Nexus's standing: how many records exist, and its own
/// record's state (`nexus` is its parameter, e.g. `$4`).
pub(crate) fn me(nexus: &str) -> Cte {
    Cte::new(
        "me",
        format!(
            "SELECT (SELECT count(*) FROM db_metadata_nexus) AS me_records,\n       \
             (SELECT state::TEXT FROM db_metadata_nexus\n        \
             WHERE nexus_id = {nexus}) AS me_state"
        ),
    )
}

/// The write happens only if the blueprint `$1` is the current target.
pub(crate) const TARGET_GUARD: &str =
    "EXISTS (SELECT 1 FROM target WHERE blueprint_id = $1)";

/// The write happens only if the executing Nexus is in control: its own
/// record `active`, or no record at all yet (rack setup) (`PROTOCOL.md`,
/// "In control").
pub(crate) const CONTROL_GUARD: &str =
    "(SELECT me_records = 0 OR me_state = 'active' FROM me)";

/// The handoff promotes only when no record is outside the allowed
/// states (`PROTOCOL.md`, "The handoff").
pub(crate) const HANDOFF_GUARD: &str = "(SELECT n FROM blocking) = 0";

/// The conditions joined with `AND`, or `TRUE` when there are none (a
/// mutant that drops every guard).
pub(crate) fn all_of(conditions: &[&str]) -> String {
    if conditions.is_empty() {
        return "TRUE".to_owned();
    }
    conditions.join("\n  AND ")
}

/// The columns every guarded record write reports: what it saw, so the
/// caller tells "target changed" and "not in control" from success.
pub(crate) fn guard_columns(query: Guarded, changed: &str) -> Guarded {
    query
        .column("(SELECT blueprint_id FROM target) AS current_target")
        .column(format!("(SELECT count(*) FROM {changed}) AS changed"))
        .column("(SELECT me_records FROM me) AS records")
        .column("(SELECT me_state FROM me) AS executing_state")
}

/// The `pg_notify` call announcing `kind`, with the Nexus id in the
/// expression `nexus` (a parameter such as `$1`, or `NULL`).
pub(crate) fn notify_call(kind: EventKind, nexus: &str) -> String {
    format!(
        "pg_notify('{CHANNEL}', '{kind} ' || COALESCE(({nexus})::TEXT, '-') \
         || ' ' || txid_current()::TEXT)"
    )
}

/// The announcement CTE: one notification if the CTE `changed` returned
/// any row, none otherwise. The final `SELECT` must read it (column
/// `notified`), because PostgreSQL evaluates only the plain CTEs a
/// statement reads.
fn announcement(changed: &'static str, kind: EventKind, nexus: &str) -> Cte {
    Cte::new(
        "notified",
        format!(
            "SELECT {} AS sent FROM {changed} LIMIT 1",
            notify_call(kind, nexus)
        ),
    )
}
