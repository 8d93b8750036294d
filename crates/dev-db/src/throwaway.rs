//! A throwaway server: a temp dir, a Unix socket inside it, gone on drop.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use camino_tempfile::Utf8TempDir;
use slog::{Logger, info, o, warn};

use crate::binaries::tail;
use crate::watchdog::{KEPT_FILE, Watchdog, reap_orphans};
use crate::{DATABASE_NAME, DevDbError, PgBinaries, USER_NAME, socket_url};

/// How long a server gets to become ready before we give up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How much a local server promises about its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// A throwaway server: `fsync`, synchronous commit and full-page
    /// writes off, for speed; a crash may lose or corrupt it.
    Throwaway,
    /// `baton db start`'s server, whose data is meant to last: the
    /// server's durable defaults.
    Durable,
}

/// Settings for every local server: only a Unix socket, SERIALIZABLE by
/// default as on CockroachDB, durability as asked, plus statement
/// statistics so tests can count what the server receives, and commit
/// timestamps so tests can order writes of different processes by when
/// the server committed them.
pub(crate) fn server_settings(
    socket_dir: &Utf8Path,
    durability: Durability,
) -> Vec<String> {
    let mut settings = vec![
        "listen_addresses=".to_owned(),
        format!("unix_socket_directories={socket_dir}"),
        "port=5432".to_owned(),
        "default_transaction_isolation=serializable".to_owned(),
        "shared_preload_libraries=pg_stat_statements".to_owned(),
        "pg_stat_statements.track=all".to_owned(),
        "max_connections=200".to_owned(),
        "track_commit_timestamp=on".to_owned(),
    ];
    if durability == Durability::Throwaway {
        settings.extend(
            [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ]
            .map(str::to_owned),
        );
    }
    settings
        .into_iter()
        .flat_map(|s| ["-c".to_owned(), s])
        .collect()
}

/// Options for a throwaway server.
#[derive(Clone, Debug, Default)]
pub struct DevDbBuilder {
    template_cache: Option<Utf8PathBuf>,
    standby: bool,
}

impl DevDbBuilder {
    /// Keeps an initialized data directory under `dir` and copies it for
    /// each server, so a test suite pays `initdb` once, not per test.
    pub fn template_cache(mut self, dir: impl Into<Utf8PathBuf>) -> Self {
        self.template_cache = Some(dir.into());
        self
    }

    /// Also runs a streaming, synchronous standby of the server, for
    /// failover tests: a commit is acknowledged only once the standby
    /// has it. See [`DevDb::failover_url`], [`DevDb::kill_primary`] and
    /// [`DevDb::promote_standby`].
    pub fn standby(mut self) -> Self {
        self.standby = true;
        self
    }

    /// Starts the server; ready to accept connections when this returns.
    pub fn start(self, log: &Logger) -> Result<DevDb, DevDbError> {
        let started = Instant::now();
        let bins = PgBinaries::find()?;
        static REAPED: std::sync::Once = std::sync::Once::new();
        REAPED.call_once(|| reap_orphans(&temp_root(), log));
        let temp = Utf8TempDir::with_prefix("baton-pg-").map_err(|e| {
            io("cannot create a temporary directory in", temp_root(), e)
        })?;
        let dir = temp.path().to_owned();
        // Before anything that could outlive us is started.
        let mut watchdog = Watchdog::start(&dir)
            .map_err(|e| io("cannot start the watchdog for", &dir, e))?;
        bins.hand_over(&dir)?;
        let data = dir.join("data");
        match &self.template_cache {
            Some(cache) => {
                let template = ensure_template(&bins, cache, log)?;
                copy_dir(&template, &data)?;
            }
            None => init_data_dir(&bins, &data, Durability::Throwaway)?,
        }
        let log = log.new(o!("pg_dir" => dir.to_string()));
        let extra = if self.standby {
            PRIMARY_SETTINGS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            Vec::new()
        };
        let child = spawn_server(&bins, &dir, &data, &extra)?;
        watchdog.server("primary", Some(child.id()));
        let mut db = DevDb {
            temp: Some(temp),
            dir,
            data,
            bins,
            child: Some(child),
            extra,
            standby: None,
            watchdog: Some(watchdog),
            log,
        };
        db.wait_ready()?;
        if self.template_cache.is_none() {
            db.bins.run(
                "createdb",
                &["-h", db.dir.as_str(), "-U", USER_NAME, DATABASE_NAME],
            )?;
        }
        if self.standby {
            db.start_standby()?;
        }
        info!(db.log, "throwaway PostgreSQL ready";
            "elapsed_ms" => started.elapsed().as_millis() as u64);
        Ok(db)
    }
}

/// A running throwaway PostgreSQL. Dropping it stops the server and
/// removes its directory; if the thread is panicking (a failed test), the
/// directory is kept and its path printed, for the server log.
///
/// If the owning process dies without dropping it (SIGKILL), a watchdog
/// process stops the server and removes the directory within a fraction
/// of a second; a directory that escapes even that (a power loss) is
/// removed by the next throwaway server's start, once its owner is gone.
#[derive(Debug)]
pub struct DevDb {
    temp: Option<Utf8TempDir>,
    dir: Utf8PathBuf,
    data: Utf8PathBuf,
    bins: PgBinaries,
    child: Option<Child>,
    /// Settings beyond [`server_settings`] (a primary's, for a standby).
    extra: Vec<String>,
    standby: Option<Standby>,
    watchdog: Option<Watchdog>,
    log: Logger,
}

/// A streaming standby of a [`DevDb`], in its `standby/` subdirectory.
#[derive(Debug)]
struct Standby {
    dir: Utf8PathBuf,
    data: Utf8PathBuf,
    child: Option<Child>,
}

/// The primary's settings when it has a synchronous standby
/// (`synchronous_commit = on` overrides the throwaway default). The
/// standby is named synchronous once it streams (`wait_sync`): named
/// before, every commit would wait for a standby not there yet.
const PRIMARY_SETTINGS: [&str; 3] = [
    "synchronous_commit=on",
    "wal_level=replica",
    "max_wal_senders=4",
];

impl DevDb {
    /// Starts a throwaway server with default options.
    pub fn start(log: &Logger) -> Result<DevDb, DevDbError> {
        DevDbBuilder::default().start(log)
    }

    /// Options for a throwaway server.
    pub fn builder() -> DevDbBuilder {
        DevDbBuilder::default()
    }

    /// The URL of Baton's database on this server.
    pub fn url(&self) -> String {
        socket_url(&self.dir, DATABASE_NAME)
    }

    /// The URL of another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        socket_url(&self.dir, database)
    }

    /// The directory holding the data, the socket and the server log.
    pub fn dir(&self) -> &Utf8Path {
        &self.dir
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server, keeping the data, so a test can see what clients
    /// do while the database is gone. [`DevDb::restart`] brings it back.
    pub fn stop_server(&mut self) -> Result<(), DevDbError> {
        self.stop_primary("fast");
        Ok(())
    }

    /// Stops the primary in `mode` (`pg_ctl stop -m MODE`), killing it
    /// if that fails.
    fn stop_primary(&mut self, mode: &str) {
        if let Some(child) = self.child.take() {
            stop(&self.bins, &self.data, child, mode, &self.log);
            if let Some(watchdog) = &mut self.watchdog {
                watchdog.server("primary", None);
            }
        }
    }

    /// Starts the server again on the same data and socket.
    pub fn restart(&mut self) -> Result<(), DevDbError> {
        self.stop_server()?;
        let child =
            spawn_server(&self.bins, &self.dir, &self.data, &self.extra)?;
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.server("primary", Some(child.id()));
        }
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), DevDbError> {
        let pid_file = self.data.join("postmaster.pid");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // PostgreSQL writes "ready" as the status line of its pid file
            // once it accepts connections.
            if std::fs::read_to_string(&pid_file)
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "ready"))
            {
                return Ok(());
            }
            let child = self.child.as_mut().expect("started");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(
                    self.not_ready(format!("the server exited ({status})"))
                );
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!(
                    "not ready after {}s",
                    READY_TIMEOUT.as_secs()
                )));
            }
            // Polling a condition, not sleeping in its place.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn not_ready(&self, reason: String) -> DevDbError {
        let log = self.dir.join("postgres.log");
        let tail = tail(&std::fs::read_to_string(&log).unwrap_or_default());
        DevDbError::NotReady { reason, log, tail }
    }
}

impl DevDb {
    /// Takes a base backup of the running server into `standby/data`,
    /// starts it as a streaming standby on its own socket in `standby/`,
    /// and waits until the primary counts it as synchronous.
    fn start_standby(&mut self) -> Result<(), DevDbError> {
        let dir = self.dir.join("standby");
        let data = crate::standby::base_backup(&self.bins, &self.dir, &dir)?;
        let child = spawn_server(&self.bins, &dir, &data, &[])?;
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.server("standby", Some(child.id()));
        }
        self.standby = Some(Standby {
            dir,
            data,
            child: Some(child),
        });
        self.wait_sync()
    }

    /// Makes the standby synchronous, and waits until the primary
    /// reports it so.
    fn wait_sync(&mut self) -> Result<(), DevDbError> {
        let log = self.dir.join("standby/postgres.log");
        crate::standby::make_synchronous(&self.bins, &self.dir, &log)
    }

    /// Whether a commit on the primary waits for the standby (`true`, as
    /// started) or not (asynchronous replication: a standby that lags or
    /// is down does not hold commits up, and a failover may lose them).
    pub fn set_synchronous(&mut self, on: bool) -> Result<(), DevDbError> {
        crate::standby::set_synchronous(&self.bins, &self.dir, on)
    }

    /// Stops the standby (its data stays), as a lagging or failed
    /// standby would be: what the primary commits now, it does not have.
    pub fn stop_standby_server(&mut self) {
        self.stop_standby();
    }

    /// Starts the stopped standby again on its data; it streams from the
    /// primary if one runs.
    pub fn start_standby_server(&mut self) -> Result<(), DevDbError> {
        let Some(standby) = &mut self.standby else {
            return Ok(());
        };
        if standby.child.is_some() {
            return Ok(());
        }
        let child = spawn_server(&self.bins, &standby.dir, &standby.data, &[])?;
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.server("standby", Some(child.id()));
        }
        standby.child = Some(child);
        // A hot standby writes "standby" as its pid file's status once it
        // accepts read-only connections.
        let pid_file = standby.data.join("postmaster.pid");
        let deadline = Instant::now() + READY_TIMEOUT;
        while !std::fs::read_to_string(&pid_file).is_ok_and(|s| {
            s.lines().any(|l| matches!(l.trim(), "standby" | "ready"))
        }) {
            if Instant::now() > deadline {
                return Err(self.not_ready(
                    "the restarted standby never became ready".to_owned(),
                ));
            }
            // Polling a condition, not sleeping in its place.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops the standby, if there is one.
    fn stop_standby(&mut self) {
        let Some(standby) = &mut self.standby else {
            return;
        };
        let Some(child) = standby.child.take() else {
            return;
        };
        stop(&self.bins, &standby.data, child, "fast", &self.log);
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.server("standby", None);
        }
    }

    /// A URL that names the primary and then the standby, for sessions
    /// that can write: a client follows a promotion by reconnecting
    /// (`None` without a standby).
    pub fn failover_url(&self) -> Option<String> {
        let standby = self.standby.as_ref()?;
        Some(crate::standby::failover_url(&self.dir, &standby.dir))
    }

    /// The standby's directory (its socket and `postgres.log`).
    pub fn standby_dir(&self) -> Option<&Utf8Path> {
        self.standby.as_ref().map(|s| s.dir.as_path())
    }

    /// Kills the primary as a crash would (`pg_ctl stop -m immediate`):
    /// no checkpoint, every connection cut.
    pub fn kill_primary(&mut self) -> Result<(), DevDbError> {
        self.stop_primary("immediate");
        Ok(())
    }

    /// Promotes the standby to a primary (`pg_ctl promote`), once it
    /// accepts writes.
    pub fn promote_standby(&mut self) -> Result<(), DevDbError> {
        let Some(standby) = &self.standby else {
            return Err(DevDbError::NotReady {
                reason: "there is no standby to promote".to_owned(),
                log: self.dir.join("postgres.log"),
                tail: String::new(),
            });
        };
        self.bins.run(
            "pg_ctl",
            &["promote", "-D", standby.data.as_str(), "-w", "-t", "60"],
        )?;
        Ok(())
    }
}

impl Drop for DevDb {
    fn drop(&mut self) {
        self.stop_standby();
        let _ = self.stop_server();
        // Without a panic, `temp` is removed when it goes out of scope.
        let temp = self.temp.take();
        if let Some(temp) = temp
            && std::thread::panicking()
        {
            // Marked, so that no later start reaps it.
            let _ = std::fs::write(temp.path().join(KEPT_FILE), "");
            let kept = temp.keep();
            eprintln!(
                "baton-dev-db: test failed; kept the server directory \
                 {kept} (server log: postgres.log)"
            );
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.stand_down();
        }
    }
}

fn io(
    what: &'static str,
    path: impl Into<Utf8PathBuf>,
    source: std::io::Error,
) -> DevDbError {
    DevDbError::Io {
        what,
        path: path.into(),
        source,
    }
}

/// Stops the server of `data` with `pg_ctl stop -m MODE`, killing it if
/// that fails, and reaps it.
fn stop(
    bins: &PgBinaries,
    data: &Utf8Path,
    mut child: Child,
    mode: &str,
    log: &Logger,
) {
    let stopped = bins.run(
        "pg_ctl",
        &["stop", "-D", data.as_str(), "-m", mode, "-w", "-t", "60"],
    );
    if let Err(error) = stopped {
        warn!(log, "pg_ctl stop failed; killing the server";
            "error" => %error);
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Where temporary directories go (`$TMPDIR`, else `/tmp`), for messages.
fn temp_root() -> Utf8PathBuf {
    std::env::temp_dir().to_string_lossy().into_owned().into()
}

pub(crate) fn init_data_dir(
    bins: &PgBinaries,
    data: &Utf8Path,
    durability: Durability,
) -> Result<(), DevDbError> {
    let mut args = vec![
        "-D",
        data.as_str(),
        "-U",
        USER_NAME,
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
    ];
    if durability == Durability::Throwaway {
        args.push("--no-sync");
    }
    bins.run("initdb", &args)?;
    Ok(())
}

fn spawn_server(
    bins: &PgBinaries,
    dir: &Utf8Path,
    data: &Utf8Path,
    extra: &[String],
) -> Result<Child, DevDbError> {
    let log_path = dir.join("postgres.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io("cannot open the server log", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| io("cannot open", &log_path, e))?;
    let mut command: Command = bins.command("postgres");
    command
        .arg("-D")
        .arg(data)
        .args(server_settings(dir, Durability::Throwaway))
        .args(extra.iter().flat_map(|s| ["-c".to_owned(), s.clone()]))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    command
        .spawn()
        .map_err(|e| io("cannot start postgres", data, e))
}

/// An initialized data directory with Baton's database, built once under
/// `cache` and reused. Built aside and renamed into place, so concurrent
/// test processes never see half of one.
fn ensure_template(
    bins: &PgBinaries,
    cache: &Utf8Path,
    log: &Logger,
) -> Result<Utf8PathBuf, DevDbError> {
    let template = cache.join(format!("baton-pg{}-template", bins.version()));
    if template.join("baton-template-ready").is_file() {
        return Ok(template);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| io("cannot create", cache, e))?;
    let aside = Utf8TempDir::with_prefix_in("building-template-", cache)
        .map_err(|e| io("cannot create a directory in", cache, e))?;
    let aside_dir = aside.path();
    bins.hand_over(aside_dir)?;
    info!(log, "building the PostgreSQL template data directory";
        "cache" => %cache);
    // Start a server on it once to create Baton's database, then stop it.
    let db = DevDbBuilder::default().start(log)?;
    let mut db = db;
    db.stop_server()?;
    let built = aside_dir.join("data");
    copy_dir(&db.data, &built)?;
    drop(db);
    File::create(built.join("baton-template-ready"))
        .map_err(|e| io("cannot mark the template", &built, e))?;
    match std::fs::rename(&built, &template) {
        Ok(()) => {}
        // Another process finished first; theirs is as good as ours.
        Err(_) if template.join("baton-template-ready").is_file() => {}
        Err(e) => {
            return Err(io("cannot move the template into", &template, e));
        }
    }
    Ok(template)
}

/// Copies a data directory keeping owners and modes (`cp -a`).
fn copy_dir(from: &Utf8Path, to: &Utf8Path) -> Result<(), DevDbError> {
    let output = Command::new("cp")
        .args(["-a", from.as_str(), to.as_str()])
        .output()
        .map_err(|e| io("cannot run cp for", from, e))?;
    if !output.status.success() {
        return Err(DevDbError::Command {
            program: "cp -a".to_owned(),
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    // The stale pid file of the server that built it must not confuse the
    // readiness check.
    let _ = std::fs::remove_file(to.join("postmaster.pid"));
    Ok(())
}
