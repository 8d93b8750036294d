//! The end-to-end promise, proved with real processes: three
//! `baton-ledger` processes at generation 1 (schema 1) write and run
//! jobs while three at generation 2 (schema 2) wait; the generation is
//! bumped; the old ones drain and quiesce, a new one takes over and
//! migrates. The server's commit timestamps of the append-only rows then
//! show every generation-1 write committed before every generation-2
//! write.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use baton_datastore::DataStore;
// The derives below name `diesel`: the one Baton re-exports.
use baton_datastore::diesel;
use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::{Nullable, Text, Timestamptz, Uuid};
use baton_datastore::diesel_async::RunQueryDsl;
use baton_types::NexusRecordState;
use baton_types::story::HandoffStory;
use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
use chrono::{DateTime, Utc};

pub(crate) use crate::rig::{Ledger, import, rack_at_generation_1, runtime};

/// Polls the database until `done`, up to [`PATIENCE`].
pub(crate) async fn until<F, Fut>(what: &str, done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    crate::rig::until(what, PATIENCE, done).await
}

/// How long any one wait may take before the test gives up.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

impl Ledger {
    fn spawn(
        url: &str,
        id: OmicronZoneUuid,
        schema: i64,
        mutant: Option<&str>,
    ) -> Ledger {
        Ledger::spawn_with(url, id, schema, mutant, &[])
    }

    /// [`Ledger::spawn`] with `extra` arguments.
    pub(crate) fn spawn_with(
        url: &str,
        id: OmicronZoneUuid,
        schema: i64,
        mutant: Option<&str>,
        extra: &[&str],
    ) -> Ledger {
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton-ledger"));
        // A mutant must get the chance to do harm: with quiesce step 2
        // removed, a job has to outlast steps 3 and 4 (a few periods) to
        // be cut off, so the old generation's jobs run a whole second.
        let job_ms = match mutant {
            Some(mutant) => {
                command.env("BATON_LEDGER_MUTANT", mutant);
                "1000"
            }
            None => "100",
        };
        // The caller's own job length wins.
        if !extra.contains(&"--job-ms") {
            command.args(["--job-ms", job_ms]);
        }
        command
            .args(["--database-url", url, "--nexus-id", &id.to_string()])
            .args(["--schema-version", &schema.to_string()])
            .args(["--period-ms", "100", "--write-period-ms", "10"])
            .args(extra);
        Ledger::start(command, id, PATIENCE)
    }
}

/// Which variant of the handoff to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Plain,
    /// One old and one new process SIGKILLed at a random moment after
    /// the bump; the new one restarted, the old one quiesced by the
    /// operator.
    Kill,
}

/// What the run left in the database, and what the processes said.
pub(crate) struct Run {
    rows: Vec<Row>,
    quiesced_at: BTreeMap<OmicronZoneUuid, DateTime<Utc>>,
    migrated_at: DateTime<Utc>,
    old: BTreeSet<OmicronZoneUuid>,
    new: BTreeSet<OmicronZoneUuid>,
    killed: BTreeSet<OmicronZoneUuid>,
    write_errors: u64,
    records: Vec<(OmicronZoneUuid, NexusRecordState)>,
    /// Failed writes each process reported while the test itself took
    /// the database away (a failover): expected then, so not counted as
    /// violations; each may have cut one job short of its end row.
    pub(crate) database_faults: BTreeMap<OmicronZoneUuid, u64>,
}

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = Uuid)]
    nexus_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Uuid>)]
    job_id: Option<uuid::Uuid>,
    #[diesel(sql_type = Timestamptz)]
    committed: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Committed {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Timestamptz)]
    committed: DateTime<Utc>,
}

pub(crate) async fn count(ds: &DataStore, sql: &'static str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = baton_datastore::diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut claim = ds.claim("test count").await.expect("claim");
    let rows: Vec<N> = baton_datastore::diesel::sql_query(sql)
        .load(claim.connection())
        .await
        .unwrap_or_default();
    rows.into_iter().next().map_or(0, |r| r.n)
}

/// Deploys generation 2: its blueprint made the target, its `not_yet`
/// records written by the running generation, its ledger processes
/// started and waiting for the handoff.
pub(crate) fn deploy_generation_2(
    rt: &tokio::runtime::Runtime,
    ds: &DataStore,
    story: &HandoffStory,
    url: &str,
) -> Vec<Ledger> {
    deploy_generation_2_with(rt, ds, story, |id| {
        Ledger::spawn(url, id, 2, None)
    })
}

/// [`deploy_generation_2`], its processes started by `spawn`.
pub(crate) fn deploy_generation_2_with(
    rt: &tokio::runtime::Runtime,
    ds: &DataStore,
    story: &HandoffStory,
    spawn: impl Fn(OmicronZoneUuid) -> Ledger,
) -> Vec<Ledger> {
    rt.block_on(async {
        import(ds, &story.new_generation_deployed).await;
        until("the not_yet records of generation 2", || async {
            let records = ds.records_list().await.expect("records");
            story.new_nexus.iter().all(|id| {
                records.iter().any(|r| {
                    r.nexus_id == *id && r.state == NexusRecordState::NotYet
                })
            })
        })
        .await;
    });
    let mut new: Vec<Ledger> =
        story.new_nexus.iter().map(|id| spawn(*id)).collect();
    for ledger in &mut new {
        ledger.wait_state("waiting_for_handoff");
    }
    new
}

/// Runs one whole handoff of ledger processes and collects the facts.
fn run_handoff(seed: u64, variant: Variant, mutant: Option<&str>) -> Run {
    println!("ledger handoff: seed {seed}, variant {variant:?}");
    let rt = runtime();
    let story = HandoffStory::new(seed);
    let (_db, url, ds) = rack_at_generation_1(&rt, &story);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut old: Vec<Ledger> = story
        .old_nexus
        .iter()
        .map(|id| Ledger::spawn(&url, *id, 1, mutant))
        .collect();
    for ledger in &mut old {
        ledger.wait_state("running");
    }
    let mut new = deploy_generation_2(&rt, &ds, &story, &url);
    rt.block_on(async {
        until("generation 1 to finish some jobs", || async {
            count(
                &ds,
                "SELECT count(*) AS n FROM ledger_entry WHERE kind = 'job_end'",
            )
            .await
                >= 3
        })
        .await;
        import(&ds, &story.handoff_started).await;
    });

    let mut killed = BTreeSet::new();
    if variant == Variant::Kill {
        // A random moment in the handoff, from the seed.
        let delay = Duration::from_millis(rng.u64(0..1500));
        // Deliberately a moment, not a condition: the kill must land at
        // a random point of the handoff.
        rt.block_on(async { tokio::time::sleep(delay).await });
        let victim_old = old.remove(rng.usize(0..old.len()));
        let index = rng.usize(0..new.len());
        let victim_new = new.remove(index);
        println!(
            "killing old {} and new {} after {} ms",
            victim_old.id,
            victim_new.id,
            delay.as_millis()
        );
        killed.insert(victim_old.id);
        killed.insert(victim_new.id);
        let (dead_old, dead_new) = (victim_old.id, victim_new.id);
        victim_old.kill();
        victim_new.kill();
        // A supervisor restarts the new one.
        new.push(Ledger::spawn(&url, dead_new, 2, None));
        // The operator quiesces the dead old one, once the server has
        // seen its connections go (the CLI refuses while they are there).
        rt.block_on(async {
            until("the dead Nexus's backends to go", || async {
                ds.backends_of(dead_old).await.expect("backends").is_empty()
            })
            .await;
            ds.record_mark_quiesced(dead_old).await.expect("marked");
        });
    }

    let mut write_errors = 0;
    for ledger in old {
        let id = ledger.id;
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "old ledger {id} exited {status}: {last}");
        assert_eq!(last["state"], "quiesced", "old ledger {id}");
        write_errors += last["write_errors"].as_u64().unwrap_or(0);
    }
    for ledger in &mut new {
        ledger.wait_state("running");
    }
    rt.block_on(async {
        until("generation 2 to write", || async {
            count(
                &ds,
                "SELECT count(*) AS n FROM ledger_entry \
                 WHERE writer_schema = 2 AND kind = 'job_end'",
            )
            .await
                >= 3
        })
        .await;
    });
    for ledger in new {
        let id = ledger.id;
        ledger.signal("-TERM");
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "new ledger {id} exited {status}: {last}");
        assert_eq!(last["state"], "stopped", "new ledger {id}");
        write_errors += last["write_errors"].as_u64().unwrap_or(0);
    }

    rt.block_on(facts(&ds, &story, killed, write_errors))
}

/// What a handoff left in the database (`ds` reaches it), with the
/// killed processes and the failed writes the processes reported: the
/// facts [`Run::violations`] checks.
pub(crate) async fn facts(
    ds: &DataStore,
    story: &HandoffStory,
    killed: BTreeSet<OmicronZoneUuid>,
    write_errors: u64,
) -> Run {
    let mut claim = ds.claim("test facts").await.expect("claim");
    let rows: Vec<Row> = baton_datastore::diesel::sql_query(
        "SELECT nexus_id, kind, job_id, \
         pg_xact_commit_timestamp(xmin) AS committed FROM ledger_entry",
    )
    .load(claim.connection())
    .await
    .expect("rows");
    let quiesced: Vec<Committed> = baton_datastore::diesel::sql_query(
        "SELECT nexus_id AS id, pg_xact_commit_timestamp(xmin) AS committed \
         FROM db_metadata_nexus WHERE state = 'quiesced'",
    )
    .load(claim.connection())
    .await
    .expect("marks");
    let migrated: Vec<Committed> = baton_datastore::diesel::sql_query(
        "SELECT gen_random_uuid() AS id, \
         pg_xact_commit_timestamp(xmin) AS committed \
         FROM baton_component_version \
         WHERE component = 'ledger' AND version = 2",
    )
    .load(claim.connection())
    .await
    .expect("migration");
    drop(claim);
    let records = ds
        .records_list()
        .await
        .expect("records")
        .into_iter()
        .map(|r| (r.nexus_id, r.state))
        .collect();
    Run {
        rows,
        quiesced_at: quiesced
            .into_iter()
            .map(|q| (OmicronZoneUuid::from_untyped_uuid(q.id), q.committed))
            .collect(),
        migrated_at: migrated
            .into_iter()
            .next()
            .expect("version 2 applied")
            .committed,
        old: story.old_nexus.iter().copied().collect(),
        new: story.new_nexus.iter().copied().collect(),
        killed,
        write_errors,
        records,
        database_faults: BTreeMap::new(),
    }
}

impl Run {
    /// Every way the run broke the promise, in words; empty if none.
    pub(crate) fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let of = |ids: &BTreeSet<OmicronZoneUuid>| {
            self.rows
                .iter()
                .filter(|r| {
                    ids.contains(&OmicronZoneUuid::from_untyped_uuid(
                        r.nexus_id,
                    ))
                })
                .collect::<Vec<_>>()
        };
        let (old, new) = (of(&self.old), of(&self.new));
        let last_old = old.iter().map(|r| r.committed).max();
        let first_new = new.iter().map(|r| r.committed).min();
        match (last_old, first_new) {
            (Some(last), Some(first)) if last >= first => out.push(format!(
                "a generation-1 row committed at {last}, after the first \
                 generation-2 row at {first}"
            )),
            (Some(_), Some(_)) => {}
            _ => out.push("a generation wrote nothing".to_owned()),
        }
        if let Some(last) = last_old
            && last >= self.migrated_at
        {
            {
                out.push(format!(
                    "a generation-1 row committed at {last}, after the \
                     version-2 migration at {}",
                    self.migrated_at
                ));
            }
        }
        for id in &self.old {
            let mine = old
                .iter()
                .filter(|r| r.nexus_id == id.into_untyped_uuid())
                .map(|r| r.committed)
                .max();
            match (mine, self.quiesced_at.get(id)) {
                (Some(last), Some(mark)) if last >= *mark => out.push(format!(
                    "Nexus {id} wrote at {last}, after its quiesced mark at \
                     {mark}"
                )),
                (_, None) => out.push(format!("Nexus {id} is not quiesced")),
                _ => {}
            }
        }
        // Every job that started also ended; a killed process may leave
        // the one job it was in the middle of.
        let mut open: BTreeMap<uuid::Uuid, (uuid::Uuid, i32)> = BTreeMap::new();
        for row in &self.rows {
            let Some(job) = row.job_id else { continue };
            let entry = open.entry(job).or_insert((row.nexus_id, 0));
            entry.1 += if row.kind == "job_start" { 1 } else { -1 };
        }
        let mut unfinished: BTreeMap<uuid::Uuid, usize> = BTreeMap::new();
        for (nexus, balance) in open.values() {
            if *balance != 0 {
                *unfinished.entry(*nexus).or_default() += 1;
            }
        }
        for (nexus, n) in unfinished {
            let id = OmicronZoneUuid::from_untyped_uuid(nexus);
            let allowed = usize::from(self.killed.contains(&id))
                + self.database_faults.get(&id).map_or(0, |&n| n as usize);
            if n > allowed {
                out.push(format!("Nexus {id} left {n} job(s) unfinished"));
            }
        }
        if self.write_errors > 0 {
            out.push(format!(
                "the processes reported {} failed write(s)",
                self.write_errors
            ));
        }
        let want: Vec<_> = self
            .records
            .iter()
            .filter(|(id, _)| self.new.contains(id))
            .filter(|(_, state)| *state == NexusRecordState::Active)
            .collect();
        if want.len() != self.new.len()
            || self.records.iter().any(|(id, s)| {
                self.old.contains(id) && *s != NexusRecordState::Quiesced
            })
        {
            out.push(format!(
                "the final records are not generation 2 active and \
                 generation 1 quiesced: {:?}",
                self.records
            ));
        }
        out
    }
}

/// How many seeds each variant runs: 1 in CI, more under
/// `cargo xtask soak` (which sets BATON_SOAK).
fn seeds(base: u64) -> impl Iterator<Item = u64> {
    let n: u64 = std::env::var("BATON_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (0..n).map(move |i| base + 1000 * i)
}

#[test]
fn every_old_write_commits_before_every_new_write() {
    for seed in seeds(1) {
        let run = run_handoff(seed, Variant::Plain, None);
        assert_eq!(run.violations(), Vec::<String>::new(), "seed {seed}");
    }
}

#[test]
fn killed_old_and_new_processes_break_nothing() {
    for seed in seeds(2) {
        let run = run_handoff(seed, Variant::Kill, None);
        assert_eq!(run.violations(), Vec::<String>::new(), "seed {seed}");
    }
}

/// With quiesce step 2 or 4 removed from the old generation (the
/// ledger's test-only `mutants` feature, built in a separate cargo
/// invocation), the same checks must fail.
#[cfg(feature = "mutants")]
mod mutants {
    use super::*;

    fn caught(mutant: &'static str) {
        let run = run_handoff(7, Variant::Plain, Some(mutant));
        let violations = run.violations();
        println!("{mutant}: {violations:#?}");
        assert!(!violations.is_empty(), "{mutant} went unnoticed");
    }

    #[test]
    fn mutant_skip_step_2_is_caught() {
        caught("skip-step-2");
    }

    #[test]
    fn mutant_skip_step_4_is_caught() {
        caught("skip-step-4");
    }
}
