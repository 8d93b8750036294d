//! What a throwaway and a persistent server share when they run a
//! streaming synchronous standby: the base backup, the name the primary
//! waits for, the wait for synchronous replication, and the URL that
//! names both servers so clients follow a promotion.

use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::binaries::tail;
use crate::{DATABASE_NAME, DevDbError, PgBinaries, USER_NAME};

/// The name the primary waits for as its synchronous standby.
const NAME: &str = "baton_standby";

/// Takes a base backup of the server whose socket is in `primary` into
/// `standby/data`, set up to stream from it as [`NAME`]; returns the
/// data directory.
pub(crate) fn base_backup(
    bins: &PgBinaries,
    primary: &Utf8Path,
    standby: &Utf8Path,
) -> Result<Utf8PathBuf, DevDbError> {
    std::fs::create_dir_all(standby).map_err(|e| DevDbError::Io {
        what: "cannot create the standby directory",
        path: standby.to_owned(),
        source: e,
    })?;
    bins.hand_over(standby)?;
    let data = standby.join("data");
    bins.run(
        "pg_basebackup",
        &[
            "-h",
            primary.as_str(),
            "-U",
            USER_NAME,
            "-D",
            data.as_str(),
            "-X",
            "stream",
            "-c",
            "fast",
            "-R",
        ],
    )?;
    // -R wrote standby.signal and a primary_conninfo; this one, later in
    // the file, wins and carries the name the primary waits for.
    let conf = data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
    text.push_str(&format!(
        "primary_conninfo = 'host={primary} port=5432 user={USER_NAME} \
         application_name={NAME}'\n"
    ));
    std::fs::write(&conf, text).map_err(|e| DevDbError::Io {
        what: "cannot write",
        path: conf.clone(),
        source: e,
    })?;
    bins.hand_over(&conf)?;
    Ok(data)
}

/// `psql` on the database of the server whose socket is in `primary`.
pub(crate) fn psql(
    bins: &PgBinaries,
    primary: &Utf8Path,
    args: &[&str],
) -> Result<std::process::Output, DevDbError> {
    let mut all =
        vec!["-h", primary.as_str(), "-U", USER_NAME, "-d", DATABASE_NAME];
    all.extend(args);
    bins.run("psql", &all)
}

/// Whether the primary waits for its standby (`on`) or not.
pub(crate) fn set_synchronous(
    bins: &PgBinaries,
    primary: &Utf8Path,
    on: bool,
) -> Result<(), DevDbError> {
    let names = if on { NAME } else { "" };
    psql(
        bins,
        primary,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'"),
            "-c",
            "SELECT pg_reload_conf()",
        ],
    )?;
    Ok(())
}

/// Makes the standby synchronous and waits until the primary reports it
/// so: from then on, a commit is acknowledged only once the standby has
/// it. `log` is the standby's server log, for the error.
pub(crate) fn make_synchronous(
    bins: &PgBinaries,
    primary: &Utf8Path,
    log: &Utf8Path,
) -> Result<(), DevDbError> {
    set_synchronous(bins, primary, true)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = psql(
            bins,
            primary,
            &[
                "-Atc",
                "SELECT sync_state FROM pg_stat_replication \
                 WHERE application_name = 'baton_standby'",
            ],
        )?;
        if String::from_utf8_lossy(&state.stdout).trim() == "sync" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DevDbError::NotReady {
                reason: "the standby never became synchronous".to_owned(),
                log: log.to_owned(),
                tail: tail(&std::fs::read_to_string(log).unwrap_or_default()),
            });
        }
        // Polling a condition, not sleeping in its place.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A URL naming the primary and then the standby for read-write
/// sessions: a client follows a promotion by reconnecting.
pub(crate) fn failover_url(primary: &Utf8Path, standby: &Utf8Path) -> String {
    let escape = |dir: &Utf8Path| {
        percent_encoding::utf8_percent_encode(dir.as_str(), crate::HOST)
            .to_string()
    };
    format!(
        "postgresql://{USER_NAME}@{},{}/{DATABASE_NAME}\
         ?target_session_attrs=read-write",
        escape(primary),
        escape(standby)
    )
}
