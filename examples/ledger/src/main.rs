//! `baton-ledger`: a small service that embeds Baton through its public
//! API only, to show (and test) that Baton drains and fences a real
//! service's own work and upgrades its own schema.
//!
//! While it may use the database it appends rows to its own append-only
//! table `ledger_entry`, in batches that hold one database claim across
//! several statements (as a request would), and runs longer jobs that
//! hold a work guard for their whole life and write a start row and an
//! end row, each through a claim of its own, with time between them that
//! is not a database call.

mod metrics;
mod schema;
mod service;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use baton_nexus::{NexusConfig, Periods};
use baton_uuid_kinds::OmicronZoneUuid;
use clap::Parser;

/// One instance of the ledger service.
///
/// Prints one JSON object per line on stdout per state change
/// (`{"nexus_id": ..., "state": ...}`). Exit status: 0 once its record is
/// `quiesced`, or after SIGTERM (a graceful stop that leaves the record
/// as it is); 1 refused or failed; 2 bad input.
#[derive(Debug, Parser)]
#[command(name = "baton-ledger", version)]
struct Args {
    /// The PostgreSQL URL.
    #[arg(long, env = "BATON_DATABASE_URL")]
    database_url: String,
    /// This instance's Nexus zone id.
    #[arg(long)]
    nexus_id: OmicronZoneUuid,
    /// The ledger schema version this build speaks (1 or 2).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=2))]
    schema_version: i64,
    /// Time between two appends of a batch, in milliseconds, from 1 to
    /// 3600000 (an hour).
    #[arg(long, default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    write_period_ms: u64,
    /// The length of a long job, in milliseconds, from 0 to 86400000 (a
    /// day).
    #[arg(long, default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    job_ms: u64,
    /// Caps every lifecycle period (execution every 60 s, drain re-check
    /// every 5 s, retries from 250 ms to 3 min), for tests and demos; in
    /// milliseconds, from 1 to 86400000 (a day).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    period_ms: Option<u64>,
    /// Never wait for announcements: every wait of the lifecycle ends
    /// only at its period (this instance's own changes are still
    /// announced). For comparing polling with wake-ups.
    #[arg(long)]
    poll_only: bool,
    /// Serve metrics in the Prometheus text format on `GET /metrics` at
    /// this address (port 0: any free port), with `GET /ready` (200 while
    /// it takes new work, 503 otherwise) and `POST /write` (one entry; 503
    /// means try another instance); the bound address is printed first,
    /// as `{"metrics_addr": "..."}`.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A URL no retry can fix is bad input (exit 2, naming its bad part),
    // not a connection to retry for ever.
    if let Err(e) = baton_datastore::check_url(&args.database_url) {
        eprintln!("baton-ledger: {e}.");
        return ExitCode::from(2);
    }
    let schema = schema::component(args.schema_version);
    let mut periods = Periods::default();
    if let Some(ms) = args.period_ms {
        periods = periods.capped(Duration::from_millis(ms));
    }
    let mut config = NexusConfig::new(args.nexus_id, &args.database_url)
        .with_component(schema)
        .with_periods(periods);
    config.wake_on_announcements = !args.poll_only;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("baton-ledger: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let options = service::Options {
        schema_version: args.schema_version,
        write_period: Duration::from_millis(args.write_period_ms),
        job: Duration::from_millis(args.job_ms),
    };
    let app = service::AppSlot::default();
    runtime.block_on(async {
        if let Some(addr) = args.metrics_addr
            && let Err(e) = metrics::serve(addr, app.clone()).await
        {
            eprintln!("baton-ledger: {e}");
            return ExitCode::from(2);
        }
        service::run(logger(), config, options, app).await
    })
}

/// Logs go to stderr at the level in `BATON_LOG` (default: warnings).
fn logger() -> slog::Logger {
    use slog::Drain;
    let level = std::env::var("BATON_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(slog::Level::Warning);
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog::LevelFilter::new(drain, level).fuse();
    slog::Logger::root(drain, slog::o!("service" => "baton-ledger"))
}
