//! The guarded statements, one type each, built once per datastore from
//! named fragments (`fragments.rs`) and its [`Guards`].
//!
//! Each statement is SQL text rather than diesel's query builder because
//! it is a data-modifying CTE (the builder has no `WITH`): the guard and
//! the write stay one statement, so no other transaction can come
//! between them. The final text of each, with and without its
//! announcement and under each mutant, is pinned in
//! `tests/output/sql/` (the `snapshots` test below), so a reviewer reads
//! the SQL that runs in the diff. Why each guard is there:
//! `PROTOCOL.md`.

mod fragments;

use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};

use diesel::sql_types::{Nullable, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::guards::Guards;
use crate::notify::EventKind;
use crate::statement::{Bind, statement};
use fragments::notify_call;
use fragments::{
    CONTROL_GUARD, Cte, Guarded, HANDOFF_GUARD, TARGET_GUARD, all_of,
    guard_columns, me, target,
};

/// Every guarded statement's text, for one datastore.
#[derive(Clone, Debug)]
pub(crate) struct Queries {
    pub(crate) ensure_records: String,
    pub(crate) delete_expunged: String,
    pub(crate) handoff: String,
    pub(crate) mark_drained: String,
    pub(crate) mark_quiesced: String,
}

impl Queries {
    /// The statements for these guards, announcing their changes when
    /// `announce` is on.
    pub(crate) fn build(guards: Guards, announce: bool) -> Queries {
        Queries {
            ensure_records: EnsureRecords::sql(guards, announce),
            delete_expunged: DeleteExpunged::sql(guards, announce),
            handoff: Handoff::sql(guards, announce),
            mark_drained: MarkDrained::sql(announce),
            mark_quiesced: MarkQuiesced::sql(announce),
        }
    }
}

/// The record step, the heart of the protocol: insert the wanted rows
/// (`$2` ids, `$3` states, parallel arrays: one scan, no union) only if
/// `$1` is the current target and the executing Nexus `$4` is in
/// control, never touching an existing row, and report what it saw. New
/// rows are what a Nexus waiting for its record waits for: announced.
pub(crate) struct EnsureRecords;

impl EnsureRecords {
    pub(crate) fn sql(guards: Guards, announce: bool) -> String {
        let mut conditions = Vec::new();
        if guards.target {
            conditions.push(TARGET_GUARD);
        }
        if guards.control {
            conditions.push(CONTROL_GUARD);
        }
        let insert = format!(
            "INSERT INTO db_metadata_nexus (nexus_id, state, \
             last_drained_blueprint_id)\n\
             SELECT id, state::db_metadata_nexus_state, NULL\n\
             FROM unnest($2::UUID[], $3::TEXT[]) AS wanted (id, state)\n\
             WHERE {}\n\
             ON CONFLICT (nexus_id) DO NOTHING\n\
             RETURNING nexus_id",
            all_of(&conditions)
        );
        let query = Guarded::default()
            .with(target())
            .with(me("$4"))
            .with(Cte::new("inserted", insert));
        guard_columns(query, "inserted")
            .announcing(announce, "inserted", EventKind::RecordsAdded, "$4")
            .render()
    }
}

/// The cleanup: delete the rows of the expunged Nexus zones `$2` only if
/// `$1` is the current target and the executing Nexus `$3` is in
/// control. Reading the target here is what orders this delete after a
/// stale insert on PostgreSQL (`PROTOCOL.md`, "A cleanup after a stale
/// insert"). A removed row may be what a handoff or a quiescing peer
/// waits for: announced.
pub(crate) struct DeleteExpunged;

impl DeleteExpunged {
    pub(crate) fn sql(guards: Guards, announce: bool) -> String {
        let mut conditions = vec!["nexus_id = ANY ($2::UUID[])"];
        // The target guard is never a mutant's: without it the cleanup
        // is the reference system's, whose gap `PROTOCOL.md` describes.
        conditions.push(TARGET_GUARD);
        if guards.control {
            conditions.push(CONTROL_GUARD);
        }
        let delete = format!(
            "DELETE FROM db_metadata_nexus\nWHERE {}\nRETURNING nexus_id",
            all_of(&conditions)
        );
        let query = Guarded::default()
            .with(target())
            .with(me("$3"))
            .with(Cte::new("deleted", delete));
        guard_columns(query, "deleted")
            .announcing(announce, "deleted", EventKind::RecordsRemoved, "$3")
            .render()
    }
}

/// The handoff, atomic: if no record is in a state other than `not_yet`
/// or `quiesced` (counting the rows *not* in the allowed states, so a
/// state added later also blocks) and the caller `$1` is `not_yet`,
/// every `not_yet` row becomes `active`.
pub(crate) struct Handoff;

impl Handoff {
    pub(crate) fn sql(guards: Guards, announce: bool) -> String {
        let mut conditions = vec!["state = 'not_yet'"];
        if guards.handoff {
            conditions.push(HANDOFF_GUARD);
        }
        conditions.push("(SELECT state FROM me) = 'not_yet'");
        let blocking = if guards.handoff {
            "(SELECT n FROM blocking) AS blocking"
        } else {
            // A mutant neither waits for the active rows nor reports them.
            "0::INT8 AS blocking"
        };
        Guarded::default()
            .with(Cte::new(
                "blocking",
                "SELECT count(*) AS n FROM db_metadata_nexus\n\
                 WHERE state NOT IN ('not_yet', 'quiesced')",
            ))
            .with(Cte::new(
                "me",
                "SELECT state FROM db_metadata_nexus WHERE nexus_id = $1",
            ))
            .with(Cte::new(
                "promoted",
                format!(
                    "UPDATE db_metadata_nexus SET state = 'active'\n\
                     WHERE {}\n\
                     RETURNING nexus_id",
                    all_of(&conditions)
                ),
            ))
            .column(blocking)
            .column("(SELECT state FROM me) AS my_state")
            .column("(SELECT count(*) FROM promoted) AS promoted")
            .announcing(announce, "promoted", EventKind::Handoff, "$1")
            .render()
    }
}

/// The drained mark of Nexus `$1` (blueprint `$2`), only while its row
/// is `active`; announced (a quiescing peer waits for it).
pub(crate) struct MarkDrained;

impl MarkDrained {
    pub(crate) fn sql(announce: bool) -> String {
        Guarded::default()
            .with(Cte::new(
                "changed",
                "UPDATE db_metadata_nexus SET last_drained_blueprint_id = $2\n\
                 WHERE nexus_id = $1 AND state = 'active'\n\
                 RETURNING nexus_id",
            ))
            .column("(SELECT count(*) FROM changed) AS n")
            .announcing(announce, "changed", EventKind::Drained, "$1")
            .render()
    }
}

/// The `quiesced` mark of Nexus `$1`, shared by both quiesce paths (its
/// own step 5 and the operator's force); announced. It runs inside the
/// fence's transaction ([`FenceLock`]): the Nexus's fenced sessions
/// ended and its fence lock held exclusively until the mark commits.
pub(crate) struct MarkQuiesced;

impl MarkQuiesced {
    pub(crate) fn sql(announce: bool) -> String {
        Guarded::default()
            .with(Cte::new(
                "changed",
                "UPDATE db_metadata_nexus SET state = 'quiesced'\n\
                 WHERE nexus_id = $1\n\
                 RETURNING nexus_id",
            ))
            .column("(SELECT count(*) FROM changed) AS n")
            .announcing(announce, "changed", EventKind::Quiesced, "$1")
            .render()
    }
}

/// Announces `kind` from inside the caller's transaction: the
/// notification goes out if, and when, that transaction commits.
pub(crate) async fn announce(
    conn: &mut AsyncPgConnection,
    kind: EventKind,
    nexus_id: Option<uuid::Uuid>,
) -> diesel::QueryResult<()> {
    // One text per kind, so the connection prepares each once.
    statement(format!("SELECT {}", notify_call(kind, "$1")))
        .bind::<Nullable<Uuid>, _>(nexus_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The database fence's lock of one Nexus: a PostgreSQL advisory lock
/// in the two-key space (`objsubid = 2` in `pg_locks`, apart from the
/// one-key migration lock), keyed by the Nexus id folded to 64 bits.
///
/// Every service connection of the Nexus holds it *shared* for its whole
/// life, taken before its record is checked; a `quiesced` mark holds it
/// *exclusively* until it commits. So the mark commits only when no
/// session that passed the check is left, and a session set up after it
/// sees the record `quiesced` (`PROTOCOL.md`, "The database fence").
/// Advisory locks are PostgreSQL's; CockroachDB has none (see the
/// README's note on the fence there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FenceLock {
    pub(crate) high: i32,
    pub(crate) low: i32,
}

impl FenceLock {
    pub(crate) fn of(nexus_id: OmicronZoneUuid) -> FenceLock {
        let bits = nexus_id.into_untyped_uuid().as_u128();
        let folded = (bits >> 64) as u64 ^ bits as u64;
        FenceLock {
            high: (folded >> 32) as u32 as i32,
            low: folded as u32 as i32,
        }
    }

    /// Taken by a service connection at set-up: `$1`, `$2` the key.
    pub(crate) const ENROL: &'static str =
        "SELECT pg_advisory_lock_shared($1, $2)";

    /// Read after [`FenceLock::ENROL`], in a statement of its own (so
    /// its snapshot is taken after the lock was granted, and sees any
    /// mark that held the lock): the Nexus `$1`'s standing.
    pub(crate) const STANDING: &'static str = "SELECT (SELECT count(*) FROM db_metadata_nexus) AS records,\n       \
         (SELECT state::TEXT FROM db_metadata_nexus WHERE nexus_id = $1) \
         AS state";

    /// The mark's bound on waiting for the lock: a session that enrolled
    /// between the termination and the lock request makes it wait, and
    /// the mark then starts over rather than hang.
    pub(crate) const LOCK_TIMEOUT: &'static str =
        "SET LOCAL lock_timeout = '2s'";

    /// Ends every other session holding the lock (`$1`, `$2` the key);
    /// a write in flight on one of them is rolled back, never committed.
    /// Only the signal: the exclusive lock that follows waits for the
    /// sessions to exit, and wakes the moment the last one has (the
    /// variant with a timeout polls every 100 ms, which cost a handoff
    /// 100 ms per session).
    pub(crate) const END_HOLDERS: &'static str = "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n\n\
         FROM pg_locks\n\
         WHERE locktype = 'advisory' AND objsubid = 2\n  \
         AND classid = ($1::INT4)::OID AND objid = ($2::INT4)::OID\n  \
         AND granted AND pid <> pg_backend_pid()";

    /// Held until the mark's transaction ends (`$1`, `$2` the key).
    pub(crate) const EXCLUSIVE: &'static str =
        "SELECT pg_advisory_xact_lock($1, $2)";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each statement's final text, pinned: `EXPECTORATE=overwrite cargo
    /// test -p baton-datastore queries` rewrites the files after a
    /// deliberate change, and the diff shows the SQL that will run.
    #[test]
    fn snapshots() {
        let no = |f: fn(&mut Guards)| {
            let mut guards = Guards::ALL;
            f(&mut guards);
            guards
        };
        let cases: Vec<(&str, String)> = vec![
            ("ensure_records", EnsureRecords::sql(Guards::ALL, false)),
            (
                "ensure_records-announced",
                EnsureRecords::sql(Guards::ALL, true),
            ),
            (
                "ensure_records-mutant-no-target-check",
                EnsureRecords::sql(no(|g| g.target = false), true),
            ),
            (
                "ensure_records-mutant-no-control-check",
                EnsureRecords::sql(no(|g| g.control = false), true),
            ),
            ("delete_expunged", DeleteExpunged::sql(Guards::ALL, false)),
            (
                "delete_expunged-announced",
                DeleteExpunged::sql(Guards::ALL, true),
            ),
            (
                "delete_expunged-mutant-no-control-check",
                DeleteExpunged::sql(no(|g| g.control = false), true),
            ),
            ("handoff", Handoff::sql(Guards::ALL, false)),
            ("handoff-announced", Handoff::sql(Guards::ALL, true)),
            (
                "handoff-mutant-ignores-active",
                Handoff::sql(no(|g| g.handoff = false), true),
            ),
            ("mark_drained", MarkDrained::sql(false)),
            ("mark_drained-announced", MarkDrained::sql(true)),
            ("mark_quiesced", MarkQuiesced::sql(false)),
            ("mark_quiesced-announced", MarkQuiesced::sql(true)),
            (
                "fence",
                format!(
                    "-- A service connection, at set-up:\n{};\n{};\n\n\
                     -- The quiesced mark's transaction, before the mark:\n\
                     {};\n{};\n{}",
                    FenceLock::ENROL,
                    FenceLock::STANDING,
                    FenceLock::LOCK_TIMEOUT,
                    FenceLock::END_HOLDERS,
                    FenceLock::EXCLUSIVE,
                ),
            ),
        ];
        for (name, sql) in cases {
            expectorate::assert_contents(
                format!("tests/output/sql/{name}.sql"),
                &format!("{sql};\n"),
            );
        }
    }

    #[test]
    fn fence_keys_differ_by_nexus_and_stay_put() {
        let a = OmicronZoneUuid::from_untyped_uuid(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        ));
        let b = OmicronZoneUuid::from_untyped_uuid(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0011_2233_4455_6678,
        ));
        assert_eq!(FenceLock::of(a), FenceLock::of(a));
        assert_ne!(FenceLock::of(a), FenceLock::of(b));
        // The fold is part of the on-disk contract between versions: a
        // mark by one build must find the sessions of another.
        assert_eq!(
            FenceLock::of(a),
            FenceLock {
                high: (0x0123_4567_u32 ^ 0x0011_2233) as i32,
                low: (0x89ab_cdef_u32 ^ 0x4455_6677) as i32,
            }
        );
    }
}
