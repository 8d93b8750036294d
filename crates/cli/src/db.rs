//! `baton db`: the local PostgreSQL and the schema.

use baton_datastore::DataStore;
use baton_dev_db::{HaCluster, PersistentDb, default_data_dir};
use camino::{Utf8Path, Utf8PathBuf};
use clap::Subcommand;

use crate::context::Context;
use crate::failure::Failure;
use crate::output;

/// Start, stop or migrate the local database.
#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Start the local PostgreSQL (idempotent), apply migrations, print
    /// its URL.
    Start {
        /// Also run a streaming synchronous standby in DIR/standby, and
        /// print a URL naming both for read-write sessions, so clients
        /// follow a promotion (`pg_ctl promote -D DIR/standby/data`).
        #[arg(long, conflicts_with = "ha")]
        standby: bool,
        /// Instead, run an HA cluster: three etcd members and two
        /// PostgreSQL nodes under Patroni (synchronous replication) on
        /// loopback addresses, kept in DIR's sibling `ha` (for the default,
        /// /var/lib/baton/ha as root); print its multi-host URL. Needs
        /// `apt-get install etcd-server patroni`.
        #[arg(long)]
        ha: bool,
        /// Where it keeps its data. Default: $BATON_DATA_DIR if set, else
        /// /var/lib/baton/db for root, else $XDG_DATA_HOME/baton/db (or
        /// ~/.local/share/baton/db).
        #[arg(long)]
        data_dir: Option<Utf8PathBuf>,
    },
    /// Stop the local PostgreSQL, and the HA cluster beside its data
    /// directory if one runs; the data stays.
    Stop {
        /// Where it keeps its data (default as for `db start`).
        #[arg(long)]
        data_dir: Option<Utf8PathBuf>,
    },
    /// Apply pending schema migrations (idempotent).
    Migrate,
}

impl DbCommand {
    /// The command's name if it acts on the local database only (and so
    /// has no use for a database URL).
    pub(crate) fn local_only(&self) -> Option<&'static str> {
        match self {
            DbCommand::Start { .. } => Some("start"),
            DbCommand::Stop { .. } => Some("stop"),
            DbCommand::Migrate => None,
        }
    }
}

pub(crate) fn run(ctx: &Context, command: DbCommand) -> Result<(), Failure> {
    let local = |dir: Option<Utf8PathBuf>| {
        PersistentDb::new(dir.unwrap_or_else(default_data_dir))
    };
    match command {
        DbCommand::Start {
            ha: true, data_dir, ..
        } => {
            let dir = ha_dir(&data_dir.unwrap_or_else(default_data_dir));
            let url = HaCluster::builder()
                .start_in(&dir, &ctx.log)
                .map_err(|e| Failure::failed(format!("{e}.")))?;
            ctx.block_on(async {
                DataStore::new(&ctx.log, &url).migrate().await?;
                Ok(())
            })?;
            output::line(&url);
        }
        DbCommand::Start {
            standby, data_dir, ..
        } => {
            let db = local(data_dir);
            let started = if standby {
                db.start_with_standby()
            } else {
                db.start().map(|_| db.client_url())
            };
            let url = started.map_err(|e| Failure::failed(format!("{e}.")))?;
            ctx.block_on(async {
                DataStore::new(&ctx.log, &url).migrate().await?;
                Ok(())
            })?;
            output::line(&url);
        }
        DbCommand::Stop { data_dir } => {
            let data_dir = data_dir.unwrap_or_else(default_data_dir);
            let ha = ha_dir(&data_dir);
            let cluster = HaCluster::stop_in(&ha)
                .map_err(|e| Failure::failed(format!("{e}.")))?;
            if cluster {
                output::line(&format!("stopped the HA cluster in {ha}"));
            }
            let db = local(Some(data_dir));
            let was_running =
                db.stop().map_err(|e| Failure::failed(format!("{e}.")))?;
            if was_running {
                output::line(&format!(
                    "stopped the local PostgreSQL in {}",
                    db.dir()
                ));
            } else if !cluster {
                output::line(&format!(
                    "no local PostgreSQL runs in {}",
                    db.dir()
                ));
            }
        }
        DbCommand::Migrate => {
            let ds = ctx.datastore()?;
            let version = ctx.block_on(async { Ok(ds.migrate().await?) })?;
            output::line(&format!("schema version {version}"));
        }
    }
    Ok(())
}

/// Where `db start --ha` keeps its cluster: beside the data directory.
fn ha_dir(data_dir: &Utf8Path) -> Utf8PathBuf {
    let absolute =
        camino::absolute_utf8(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    absolute.with_file_name("ha")
}
