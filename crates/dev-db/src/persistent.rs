//! A persistent local server for `baton db start` / `baton db stop`.

use std::fs::File;

use camino::{Utf8Path, Utf8PathBuf};

use crate::binaries::{is_root, tail};
use crate::throwaway::{Durability, init_data_dir, server_settings};
use crate::{DATABASE_NAME, DevDbError, PgBinaries, USER_NAME, socket_url};

/// The longest Unix socket path the system takes (`sun_path` holds 108
/// bytes with the final NUL on Linux; PostgreSQL has the same limit).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// The server's socket file name inside the directory.
const SOCKET_FILE: &str = ".s.PGSQL.5432";

/// The default data directory: `$BATON_DATA_DIR` if set; else
/// `/var/lib/baton/db` as root (the server runs as `postgres`, which
/// cannot enter root's home); else `$XDG_DATA_HOME/baton/db` or
/// `~/.local/share/baton/db`.
pub fn default_data_dir() -> Utf8PathBuf {
    if let Some(dir) = std::env::var("BATON_DATA_DIR")
        .ok()
        .filter(|d| !d.is_empty())
    {
        return dir.into();
    }
    if is_root() {
        return "/var/lib/baton/db".into();
    }
    let base = std::env::var("XDG_DATA_HOME")
        .ok()
        .filter(|s| !s.is_empty())
        .map(Utf8PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
            Utf8PathBuf::from(home).join(".local/share")
        });
    base.join("baton/db")
}

/// A local server whose data survives: `DIR/data` holds the cluster, the
/// socket and `server.log` sit in `DIR`. Its server is durable (`fsync`
/// on), unlike the throwaway ones tests use.
///
/// Several processes may start or stop it at once: each holds an
/// exclusive lock on `DIR/.baton-lock` while it does, so one starts the
/// server and the others find it running.
#[derive(Clone, Debug)]
pub struct PersistentDb {
    dir: Utf8PathBuf,
}

impl PersistentDb {
    /// The server kept in `dir` (nothing is started yet). A relative
    /// `dir` is taken from the current directory, since the server and
    /// the URL need the whole path.
    pub fn new(dir: impl Into<Utf8PathBuf>) -> PersistentDb {
        let dir = dir.into();
        let dir = std::path::absolute(&dir)
            .ok()
            .and_then(|d| Utf8PathBuf::try_from(d).ok())
            .unwrap_or(dir);
        PersistentDb { dir }
    }

    /// Its directory.
    pub fn dir(&self) -> &Utf8Path {
        &self.dir
    }

    /// The URL of Baton's database on it.
    pub fn url(&self) -> String {
        socket_url(&self.dir, DATABASE_NAME)
    }

    fn data(&self) -> Utf8PathBuf {
        self.dir.join("data")
    }

    /// True if its server is running.
    pub fn is_running(&self) -> Result<bool, DevDbError> {
        if !self.data().join("PG_VERSION").is_file() {
            return Ok(false);
        }
        running(&PgBinaries::find()?, &self.data())
    }

    /// Refuses, before anything is created, a directory whose socket
    /// path would be too long for the system.
    fn check_socket_path(&self) -> Result<(), DevDbError> {
        let socket = self.dir.join(SOCKET_FILE);
        if socket.as_str().len() > MAX_SOCKET_PATH {
            return Err(DevDbError::PathTooLong {
                dir: self.dir.clone(),
                socket_len: socket.as_str().len(),
                max: MAX_SOCKET_PATH,
            });
        }
        Ok(())
    }

    /// Creates the directory if needed and takes the lock on it, held
    /// until the returned file is dropped. Blocks while another process
    /// holds it.
    fn lock(&self) -> Result<File, DevDbError> {
        self.check_socket_path()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| DevDbError::Io {
            what: "cannot create the data directory",
            path: self.dir.clone(),
            source: e,
        })?;
        let path = self.dir.join(".baton-lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DevDbError::Io {
                what: "cannot open the lock file",
                path: path.clone(),
                source: e,
            })?;
        file.lock().map_err(|e| DevDbError::Io {
            what: "cannot lock",
            path,
            source: e,
        })?;
        Ok(file)
    }

    /// Starts the server if it is not running (creating the data
    /// directory the first time) and returns its URL. Idempotent, also
    /// when several processes call it at once.
    pub fn start(&self) -> Result<String, DevDbError> {
        let _lock = self.lock()?;
        if self.is_running()? {
            return Ok(self.url());
        }
        let bins = PgBinaries::find()?;
        bins.hand_over(&self.dir)?;
        let fresh = !self.data().join("PG_VERSION").is_file();
        if fresh {
            init_data_dir(&bins, &self.data(), Durability::Durable)?;
        }
        let log = self.dir.join("server.log");
        let started = pg_ctl_start(&bins, &self.dir, &self.data(), &log);
        if let Err(e) = started {
            // pg_ctl only says to examine the log: the cause is there.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(DevDbError::NotReady {
                reason: e.to_string(),
                log,
                tail: tail(&text),
            });
        }
        if fresh {
            bins.run(
                "createdb",
                &["-h", self.dir.as_str(), "-U", USER_NAME, DATABASE_NAME],
            )?;
        }
        Ok(self.url())
    }

    /// Stops the server (and its standby, if it has one); the data
    /// stays. Returns false if it was not running.
    pub fn stop(&self) -> Result<bool, DevDbError> {
        if !self.data().join("PG_VERSION").is_file() {
            return Ok(false);
        }
        let _lock = self.lock()?;
        let bins = PgBinaries::find()?;
        let standby = self.standby_data();
        if standby.join("PG_VERSION").is_file() && running(&bins, &standby)? {
            bins.run(
                "pg_ctl",
                &["stop", "-D", standby.as_str(), "-m", "fast", "-w"],
            )?;
        }
        if !self.is_running()? {
            return Ok(false);
        }
        bins.run(
            "pg_ctl",
            &["stop", "-D", self.data().as_str(), "-m", "fast", "-w"],
        )?;
        Ok(true)
    }

    fn standby_dir(&self) -> Utf8PathBuf {
        self.dir.join("standby")
    }

    fn standby_data(&self) -> Utf8PathBuf {
        self.standby_dir().join("data")
    }

    /// With a standby: a URL naming the server and then its standby for
    /// read-write sessions, so clients follow a promotion; else the
    /// plain [`PersistentDb::url`].
    pub fn client_url(&self) -> String {
        if !self.standby_data().join("PG_VERSION").is_file() {
            return self.url();
        }
        crate::standby::failover_url(&self.dir, &self.standby_dir())
    }

    /// [`PersistentDb::start`], plus a streaming synchronous standby in
    /// `DIR/standby` (created from a base backup the first time); a
    /// commit is acknowledged only once the standby has it. Returns
    /// [`PersistentDb::client_url`]. Idempotent.
    pub fn start_with_standby(&self) -> Result<String, DevDbError> {
        let standby_socket = self.standby_dir().join(SOCKET_FILE);
        if standby_socket.as_str().len() > MAX_SOCKET_PATH {
            return Err(DevDbError::PathTooLong {
                dir: self.standby_dir(),
                socket_len: standby_socket.as_str().len(),
                max: MAX_SOCKET_PATH,
            });
        }
        self.start()?;
        let _lock = self.lock()?;
        let bins = PgBinaries::find()?;
        let data = self.standby_data();
        if !data.join("PG_VERSION").is_file() {
            crate::standby::base_backup(&bins, &self.dir, &self.standby_dir())?;
        }
        if !running(&bins, &data)? {
            let log = self.standby_dir().join("server.log");
            pg_ctl_start(&bins, &self.standby_dir(), &data, &log)?;
        }
        let log = self.standby_dir().join("server.log");
        crate::standby::make_synchronous(&bins, &self.dir, &log)?;
        Ok(self.client_url())
    }
}

/// Starts the durable server of `data` with its socket in `dir`, logging
/// to `log`, and waits until it accepts connections.
fn pg_ctl_start(
    bins: &PgBinaries,
    dir: &Utf8Path,
    data: &Utf8Path,
    log: &Utf8Path,
) -> Result<std::process::Output, DevDbError> {
    let options = server_settings(dir, Durability::Durable)
        .chunks(2)
        .map(|pair| format!("-c {}", shell_quote(&pair[1])))
        .collect::<Vec<_>>()
        .join(" ");
    bins.run(
        "pg_ctl",
        &[
            "start",
            "-D",
            data.as_str(),
            "-l",
            log.as_str(),
            "-w",
            "-t",
            "60",
            "-o",
            &options,
        ],
    )
}

/// True if the server of `data` runs.
fn running(bins: &PgBinaries, data: &Utf8Path) -> Result<bool, DevDbError> {
    let status = bins
        .command("pg_ctl")
        .args(["status", "-D", data.as_str()])
        .output()
        .map_err(|e| DevDbError::Io {
            what: "cannot run pg_ctl status for",
            path: data.to_owned(),
            source: e,
        })?;
    Ok(status.status.success())
}

fn shell_quote(value: &str) -> String {
    // pg_ctl passes -o through a shell; single quotes keep it one word.
    format!("'{}'", value.replace('\'', r"'\''"))
}
