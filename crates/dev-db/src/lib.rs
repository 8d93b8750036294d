//! Start and stop a local PostgreSQL from the system's server binaries.
//!
//! Two modes: a throwaway server in a temporary directory (for tests and
//! `baton demo`), listening only on a Unix socket inside that directory and
//! removed on drop; and a persistent server whose data directory survives
//! (`baton db start` / `stop`). As root, the server runs as the `postgres`
//! user, since PostgreSQL refuses to run as root. This crate starts
//! processes and manages files; it never speaks SQL.
//!
//! ```
//! # fn main() -> Result<(), baton_dev_db::DevDbError> {
//! # let log = slog::Logger::root(slog::Discard, slog::o!());
//! let db = baton_dev_db::DevDb::start(&log)?;
//! let dir = db.dir().to_owned();
//! assert!(db.url().starts_with("postgresql://"));
//! drop(db); // stops the server and removes its directory
//! assert!(!dir.exists());
//! # Ok(()) }
//! ```

mod binaries;
mod persistent;
mod throwaway;

pub use binaries::PgBinaries;
pub use persistent::{PersistentDb, default_data_dir};
pub use throwaway::{DevDb, DevDbBuilder};

use camino::Utf8PathBuf;

/// The name of the database Baton uses on a local server.
pub const DATABASE_NAME: &str = "baton";

/// The superuser created on a local server (trust authentication, reachable
/// only through the socket in the server's own directory).
pub const USER_NAME: &str = "baton";

/// What went wrong starting or stopping a local server.
#[derive(Debug, thiserror::Error)]
pub enum DevDbError {
    /// The server binaries are not installed.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found in \
         /usr/lib/postgresql/*/bin, $BATON_PG_BIN or $PATH; install them \
         with `apt-get install postgresql` (Debian/Ubuntu)"
    )]
    BinariesMissing,
    /// Running as root, but there is no `postgres` user to run the server.
    #[error(
        "running as root, but there is no `postgres` user to run the server \
         as; install the `postgresql` package, which creates it"
    )]
    NoPostgresUser,
    /// Running as root, and the user database could not be read to find
    /// the user to run the server as.
    #[error(
        "running as root, but the `{user}` user (to run the server as) \
         could not be looked up: {source}"
    )]
    UserLookup {
        /// Which user.
        user: String,
        /// Why the lookup failed (`getpwnam_r`'s error).
        source: std::io::Error,
    },
    /// A file or directory operation failed.
    #[error("{what} ({path}): {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: Utf8PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper program failed.
    #[error("{program} failed ({status}); its output: {output}")]
    Command {
        /// Which program.
        program: String,
        /// How it exited.
        status: String,
        /// What it printed (the end of it).
        output: String,
    },
    /// The server did not become ready in time, or exited.
    #[error("PostgreSQL did not start: {reason}; server log {log}: {tail}")]
    NotReady {
        /// Why we gave up.
        reason: String,
        /// The server's log file.
        log: Utf8PathBuf,
        /// The end of the log.
        tail: String,
    },
}

/// A `postgresql://` URL for the Unix socket in `socket_dir`.
pub fn socket_url(socket_dir: &camino::Utf8Path, database: &str) -> String {
    format!(
        "postgresql://{USER_NAME}@{}/{database}",
        percent_encode_path(socket_dir.as_str())
    )
}

fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() * 2);
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn socket_urls_encode_the_directory() {
        let url = super::socket_url("/tmp/x y".into(), "baton");
        assert_eq!(url, "postgresql://baton@%2Ftmp%2Fx%20y/baton");
    }
}
