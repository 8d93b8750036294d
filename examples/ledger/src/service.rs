//! The service itself: Baton's lifecycle, the ledger's writers, and the
//! state lines on stdout.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_datastore::diesel;
use baton_datastore::diesel::sql_types::{Nullable, Text, Uuid};
use baton_nexus::{Nexus, NexusConfig, NexusError, NexusState};
use baton_uuid_kinds::GenericUuid;
use serde_json::json;
use slog::{Logger, warn};

/// Appends in one batch, under one claim.
const BATCH: usize = 3;

pub(crate) struct Options {
    pub(crate) schema_version: i64,
    pub(crate) write_period: Duration,
    pub(crate) job: Duration,
}

#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    jobs_started: AtomicU64,
    jobs_ended: AtomicU64,
    write_errors: AtomicU64,
    /// Entries written for `POST /write`.
    requests: AtomicU64,
}

/// What `/ready` and `/write` serve: the Nexus and the schema it speaks.
pub(crate) struct App {
    pub(crate) nexus: Nexus,
    schema_version: i64,
    counters: Arc<Counters>,
}

/// The service behind `/ready` and `/write`, set once its Nexus started
/// (until then, `/ready` says it is starting).
pub(crate) type AppSlot = Arc<std::sync::OnceLock<App>>;

/// A 503 body: one JSON line naming why.
pub(crate) fn unavailable(reason: &str) -> String {
    format!("{}\n", json!({ "error": reason, "retry_elsewhere": true }))
}

pub(crate) async fn run(
    log: Logger,
    config: NexusConfig,
    options: Options,
    app: AppSlot,
) -> ExitCode {
    let nexus = start(&log, config);
    let counters = Arc::new(Counters::default());
    let _ = app.set(App {
        nexus: nexus.clone(),
        schema_version: options.schema_version,
        counters: counters.clone(),
    });
    let options = Arc::new(options);
    let reporter = tokio::spawn(report(nexus.clone()));
    let writer = tokio::spawn(append_batches(
        log.clone(),
        nexus.clone(),
        options.clone(),
        counters.clone(),
    ));
    let jobs = tokio::spawn(run_jobs(
        log.clone(),
        nexus.clone(),
        options.clone(),
        counters.clone(),
    ));
    let last = tokio::select! {
        last = nexus.join() => last,
        () = terminated() => nexus.stop().await,
    };
    // The writers end on their own once refused; give a job in flight
    // (only possible with a broken lifecycle) time to report itself.
    let grace = options.job + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async {
        let _ = writer.await;
        let _ = jobs.await;
    })
    .await;
    let _ = reporter.await;
    // The final state's line, printed here once the writers are done,
    // carries what the instance did (extra fields, as the contract
    // allows).
    let mut line = state_line(&nexus, &last);
    if let Some(fields) = line.as_object_mut() {
        for (name, counter) in [
            ("entries", &counters.entries),
            ("jobs_started", &counters.jobs_started),
            ("jobs_ended", &counters.jobs_ended),
            ("write_errors", &counters.write_errors),
            ("requests", &counters.requests),
        ] {
            fields
                .insert(name.to_owned(), json!(counter.load(Ordering::SeqCst)));
        }
    }
    println!("{line}");
    match last {
        NexusState::Quiesced | NexusState::Stopped => ExitCode::SUCCESS,
        NexusState::Fenced { reason }
        | NexusState::Failed { reason }
        | NexusState::Refused { reason } => {
            eprintln!("baton-ledger: {reason}.");
            ExitCode::from(1)
        }
        _ => ExitCode::from(1),
    }
}

/// The Nexus, as any service starts it.
#[cfg(not(feature = "mutants"))]
fn start(log: &Logger, config: NexusConfig) -> Nexus {
    Nexus::start(log, config)
}

/// The Nexus, with the deliberate bug `BATON_LEDGER_MUTANT` names (the
/// tests' teeth; only in the test-only `mutants` build).
#[cfg(feature = "mutants")]
fn start(log: &Logger, config: NexusConfig) -> Nexus {
    use baton_nexus::NexusMutant;
    let mutant = match std::env::var("BATON_LEDGER_MUTANT").as_deref() {
        Ok("skip-step-2") => NexusMutant::SkipStep2,
        Ok("skip-step-4") => NexusMutant::SkipStep4,
        Ok("no-fence") => {
            NexusMutant::Datastore(baton_datastore::Mutant::NoFence)
        }
        _ => NexusMutant::None,
    };
    Nexus::start_with_mutant(log, config, mutant)
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `{"nexus_id": ..., "state": ..., "step"/"reason": ...}` for a state
/// (the contract's line: the phase under `state`).
fn state_line(nexus: &Nexus, state: &NexusState) -> serde_json::Value {
    let mut line = json!({ "nexus_id": nexus.id(), "state": state.label() });
    if let Some(fields) = line.as_object_mut() {
        if let Some(step) = state.step() {
            fields.insert("step".to_owned(), json!(step));
        }
        if let Some(reason) = state.reason() {
            fields.insert("reason".to_owned(), json!(reason));
        }
    }
    line
}

/// One JSON line per state change, none skipped, up to (not including)
/// the final state, whose line `run` prints with the counters.
async fn report(nexus: Nexus) {
    let mut watch = nexus.watch();
    let mut printed = 0;
    loop {
        let history = nexus.history();
        for state in history[printed..].iter().filter(|s| !s.is_final()) {
            println!("{}", state_line(&nexus, state));
        }
        printed = history.len();
        if history.last().is_some_and(NexusState::is_final)
            || watch.changed().await.is_err()
        {
            return;
        }
    }
}

/// What to do after a refusal: wait for the Nexus to run, or stop.
async fn after_refusal(log: &Logger, nexus: &Nexus, e: NexusError) -> bool {
    match e {
        NexusError::NotYetRunning { .. } => {
            let state = nexus.wait_for(|s| *s == NexusState::Running).await;
            state == NexusState::Running
        }
        NexusError::Datastore(e) => {
            warn!(log, "cannot get a database connection; retrying";
                "error" => %e);
            tokio::time::sleep(Duration::from_millis(100)).await;
            true
        }
        // Quiescing or ended: no new work, ever.
        _ => false,
    }
}

/// Batches of appends, each batch under one claim (a request that makes
/// several statements on one connection).
async fn append_batches(
    log: Logger,
    nexus: Nexus,
    options: Arc<Options>,
    counters: Arc<Counters>,
) {
    loop {
        let mut claim = match nexus.claim("ledger append batch").await {
            Ok(claim) => claim,
            Err(e) => {
                if after_refusal(&log, &nexus, e).await {
                    continue;
                }
                return;
            }
        };
        // A batch begins and ends with a write: while it holds its
        // claim, another write is always still to come.
        for i in 0..BATCH {
            if i > 0 {
                tokio::time::sleep(options.write_period).await;
            }
            match insert(&nexus, &options, &mut claim, "entry", None).await {
                Ok(()) => {
                    counters.entries.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    counters.write_errors.fetch_add(1, Ordering::SeqCst);
                    warn!(log, "append failed"; "error" => %e);
                    break;
                }
            }
        }
        // The next batch starts at once, as requests would keep coming:
        // there is almost always a batch in flight to drain.
        drop(claim);
    }
}

/// Long jobs: a work guard for the whole job, a claim for each write.
async fn run_jobs(
    log: Logger,
    nexus: Nexus,
    options: Arc<Options>,
    counters: Arc<Counters>,
) {
    loop {
        let guard = match nexus.work_guard("ledger job") {
            Ok(guard) => guard,
            Err(e) => {
                if after_refusal(&log, &nexus, e).await {
                    continue;
                }
                return;
            }
        };
        let job = uuid::Uuid::new_v4();
        if let Err(e) = write_one(&nexus, &options, "job_start", job).await {
            warn!(log, "job could not start"; "job" => %job, "error" => %e);
            // A database error may come after the start row committed (a
            // connection lost at COMMIT): a failed write like any other,
            // which may leave this job without its end row. A refusal of
            // the Nexus's ran no statement.
            if let NexusError::Datastore(_) = e {
                counters.write_errors.fetch_add(1, Ordering::SeqCst);
            }
            drop(guard);
            if !after_refusal(&log, &nexus, e).await {
                return;
            }
            continue;
        }
        counters.jobs_started.fetch_add(1, Ordering::SeqCst);
        // The part of the job that is not a database call.
        tokio::time::sleep(options.job).await;
        match write_one(&nexus, &options, "job_end", job).await {
            Ok(()) => {
                counters.jobs_ended.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                counters.write_errors.fetch_add(1, Ordering::SeqCst);
                warn!(log, "job could not write its end row";
                    "job" => %job, "error" => %e);
            }
        }
        drop(guard);
    }
}

/// `POST /write`: one entry under one claim, as a client's request, with
/// the id the client chose (or a new one). A refusal another instance
/// may serve is 503 (try elsewhere), any other error 500; the body is one
/// JSON line, naming the entry on success.
pub(crate) async fn write(
    app: &App,
    id: Option<uuid::Uuid>,
) -> (&'static str, String) {
    let id = id.unwrap_or_else(uuid::Uuid::new_v4);
    let options = Options {
        schema_version: app.schema_version,
        write_period: Duration::ZERO,
        job: Duration::ZERO,
    };
    let result = async {
        let mut claim = app.nexus.claim("ledger request").await?;
        insert_as(&app.nexus, &options, &mut claim, id, "entry", None).await
    }
    .await;
    match result {
        Ok(()) => {
            app.counters.requests.fetch_add(1, Ordering::SeqCst);
            ("200 OK", format!("{}\n", json!({ "written": 1, "id": id })))
        }
        Err(e) if e.is_unavailable() => {
            ("503 Service Unavailable", unavailable(&e.to_string()))
        }
        Err(e) => (
            "500 Internal Server Error",
            format!("{}\n", json!({ "error": e.to_string() })),
        ),
    }
}

async fn write_one(
    nexus: &Nexus,
    options: &Options,
    kind: &'static str,
    job: uuid::Uuid,
) -> Result<(), NexusError> {
    let mut claim = nexus.claim("ledger job").await?;
    insert(nexus, options, &mut claim, kind, Some(job)).await
}

async fn insert(
    nexus: &Nexus,
    options: &Options,
    claim: &mut baton_datastore::Claim,
    kind: &'static str,
    job: Option<uuid::Uuid>,
) -> Result<(), NexusError> {
    let id = uuid::Uuid::new_v4();
    insert_as(nexus, options, claim, id, kind, job).await
}

/// [`insert`] with the entry's id given.
async fn insert_as(
    nexus: &Nexus,
    options: &Options,
    claim: &mut baton_datastore::Claim,
    id: uuid::Uuid,
    kind: &'static str,
    job: Option<uuid::Uuid>,
) -> Result<(), NexusError> {
    use baton_datastore::diesel_async::RunQueryDsl;
    diesel::sql_query(crate::schema::insert(options.schema_version))
        .bind::<Uuid, _>(id)
        .bind::<Uuid, _>(nexus.id().into_untyped_uuid())
        .bind::<Text, _>(kind)
        .bind::<Nullable<Uuid>, _>(job)
        .execute(claim.connection())
        .await
        .map_err(|e| {
            NexusError::Datastore(baton_datastore::Error::from_diesel(
                "ledger insert",
                e,
            ))
        })?;
    Ok(())
}
