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
mod ha;
mod persistent;
mod standby;
mod throwaway;
mod watchdog;

pub use binaries::PgBinaries;
pub use ha::{
    HaCluster, HaClusterBuilder, Member, PatroniTimings, Replication,
};
pub use persistent::{PersistentDb, default_data_dir};
pub use throwaway::{DevDb, DevDbBuilder};

use camino::Utf8PathBuf;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

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
    /// The directory's path is too long for the server's Unix socket.
    #[error(
        "the data directory {dir} is too long: the server's socket in it \
         would be a {socket_len}-byte path, and the system allows at most \
         {max}; choose a shorter directory"
    )]
    PathTooLong {
        /// The directory.
        dir: Utf8PathBuf,
        /// The socket path's length.
        socket_len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// An HA cluster needs a program that is not installed.
    #[error(
        "`{program}` was not found on $PATH: an HA cluster needs etcd and \
         Patroni; install them with `apt-get install etcd-server patroni` \
         (Debian/Ubuntu)"
    )]
    HaMissing {
        /// Which program.
        program: String,
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
    let host = utf8_percent_encode(socket_dir.as_str(), HOST);
    format!("postgresql://{USER_NAME}@{host}/{database}")
}

/// What the socket directory escapes in the URL's host position: every
/// byte but RFC 3986's unreserved characters (letters, digits, `-._~`),
/// so `/` and `%` are always escaped and the URL parses as one host.
pub(crate) const HOST: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::socket_url;

    #[test]
    fn socket_urls_encode_the_directory() {
        for (dir, url) in [
            (
                "/var/lib/baton/db",
                "postgresql://baton@%2Fvar%2Flib%2Fbaton%2Fdb/baton",
            ),
            ("/tmp/x y", "postgresql://baton@%2Ftmp%2Fx%20y/baton"),
            ("/tmp/100%", "postgresql://baton@%2Ftmp%2F100%25/baton"),
            (
                "/tmp/a-b.c_d~e+f:g@h",
                "postgresql://baton@%2Ftmp%2Fa-b.c_d~e%2Bf%3Ag%40h/baton",
            ),
            ("/tmp/é", "postgresql://baton@%2Ftmp%2F%C3%A9/baton"),
        ] {
            assert_eq!(socket_url(dir.into(), "baton"), url, "{dir:?}");
        }
    }

    /// The rule the URLs were first written with, byte for byte, over
    /// every ASCII character.
    #[test]
    fn only_unreserved_characters_stay_as_they_are() {
        for c in (0..=127u8).map(char::from) {
            let kept = c.is_ascii_alphanumeric() || "-._~".contains(c);
            let want = if kept {
                c.to_string()
            } else {
                format!("%{:02X}", c as u8)
            };
            let url = socket_url(format!("/{c}").as_str().into(), "d");
            assert_eq!(url, format!("postgresql://baton@%2F{want}/d"));
        }
    }
}
