//! The ledger's own schema: version 1 creates `ledger_entry`; version 2
//! adds a NOT NULL column that version-1 code does not fill, so
//! version-1 code cannot write once it is applied.

use baton_datastore::{Migration, SchemaComponent};

const V1: &str = "CREATE TABLE ledger_entry (
    id UUID NOT NULL PRIMARY KEY,
    nexus_id UUID NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('entry', 'job_start', 'job_end')),
    job_id UUID,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

// Rows written before it were written by version-1 code; the default is
// dropped at once, so only code that names the column can insert.
const V2: &str = "ALTER TABLE ledger_entry
    ADD COLUMN writer_schema INT8 NOT NULL DEFAULT 1;
ALTER TABLE ledger_entry ALTER COLUMN writer_schema DROP DEFAULT";

/// The ledger's schema component up to `version`.
pub(crate) fn component(version: i64) -> SchemaComponent {
    let all = [
        Migration::new(1, "ledger entries", V1),
        Migration::new(2, "writer schema", V2),
    ];
    let wanted = all.into_iter().take(version as usize).collect();
    SchemaComponent::new("ledger", wanted).expect("numbered 1, 2")
}

/// The insert this version of the code speaks.
pub(crate) fn insert(version: i64) -> &'static str {
    if version >= 2 {
        "INSERT INTO ledger_entry (id, nexus_id, kind, job_id, writer_schema) \
         VALUES ($1, $2, $3, $4, 2)"
    } else {
        "INSERT INTO ledger_entry (id, nexus_id, kind, job_id) \
         VALUES ($1, $2, $3, $4)"
    }
}
