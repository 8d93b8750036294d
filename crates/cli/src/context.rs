//! What every command may need from its surroundings: the database URL
//! given (or the local database), the log level, an async runtime.

use baton_datastore::DataStore;
use baton_dev_db::{PersistentDb, default_data_dir};
use slog::{Drain, Logger, o};

use crate::failure::Failure;

/// The global options, as every command group receives them.
#[derive(Debug)]
pub(crate) struct Context {
    /// `--database-url` (or `BATON_DATABASE_URL`), if given.
    pub database_url: Option<String>,
    /// Where logs go, at the level `BATON_LOG` asks for.
    pub log: Logger,
    /// Runs the database commands (a datastore's pool lives on it).
    runtime: tokio::runtime::Runtime,
}

impl Context {
    /// The context, or bad input if `BATON_LOG` names no level.
    pub(crate) fn new(database_url: Option<String>) -> Result<Self, Failure> {
        let level = log_level()?;
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        let log = Logger::root(drain.filter_level(level).fuse(), o!());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| {
                Failure::failed(format!("cannot start the runtime: {e}."))
            })?;
        Ok(Context {
            database_url,
            log,
            runtime,
        })
    }

    /// The URL given, else the local database if it runs, else a sentence
    /// saying how to get one.
    pub(crate) fn url(&self) -> Result<String, Failure> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        let local = PersistentDb::new(default_data_dir());
        if local_is_running(&local) {
            return Ok(local.client_url());
        }
        Err(Failure::bad_input(format!(
            "no database to use: pass --database-url URL (or set \
             BATON_DATABASE_URL), or start the local one with `baton db \
             start` (data directory {})",
            local.dir()
        )))
    }

    /// A datastore on [`Context::url`].
    pub(crate) fn datastore(&self) -> Result<DataStore, Failure> {
        let url = self.url()?;
        baton_datastore::check_url(&url)?;
        // The pool starts its housekeeping task on the current runtime.
        let _entered = self.runtime.enter();
        Ok(DataStore::new(&self.log, &url))
    }

    /// A datastore when there is a database to use (one given, or the
    /// local one running), else `None`: for a command that can do
    /// without one and says what it then did not check.
    pub(crate) fn datastore_if_any(
        &self,
    ) -> Result<Option<DataStore>, Failure> {
        let local = PersistentDb::new(default_data_dir());
        if self.database_url.is_none() && !local_is_running(&local) {
            return Ok(None);
        }
        self.datastore().map(Some)
    }

    /// Runs `work` to completion on the runtime.
    pub(crate) fn block_on<T>(
        &self,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        self.runtime.block_on(work)
    }
}

fn local_is_running(local: &PersistentDb) -> bool {
    local.is_running().unwrap_or(false)
}

/// The log level in `BATON_LOG` (default: errors only, so that stdout
/// and stderr stay what the contract says they are); anything else set
/// there is bad input, not silently ignored.
fn log_level() -> Result<slog::Level, Failure> {
    match std::env::var("BATON_LOG") {
        Err(std::env::VarError::NotPresent) => Ok(slog::Level::Error),
        Ok(value) => match value.as_str() {
            "" | "error" => Ok(slog::Level::Error),
            "warning" | "warn" => Ok(slog::Level::Warning),
            "info" => Ok(slog::Level::Info),
            "debug" => Ok(slog::Level::Debug),
            other => Err(Failure::bad_input(format!(
                "BATON_LOG={other:?} is not a log level; use error, \
                 warning, info or debug."
            ))),
        },
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::bad_input(
            "BATON_LOG is not valid UTF-8; use error, warning, info or debug.",
        )),
    }
}
