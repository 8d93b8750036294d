//! Opening a connection: the URL parsed once, TCP keepalives on, and a
//! failure named by the server's own reason, at once.
//!
//! The pool (bb8) opens connections in tasks of its own and, when one
//! fails, only hands the error to an error sink while the caller waits
//! out the whole connection timeout and then reads "timed out". So the
//! pool is told not to retry, its error sink publishes each failure on a
//! watch channel, and a claim waiting for a connection returns the first
//! failure it sees, with the server's reason and whether retrying can
//! help.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::SimpleAsyncConnection;
use diesel_async::pooled_connection::PoolError;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;

/// Why a connection could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConnectFailure {
    /// The cause, in the server's or the system's words.
    pub(crate) reason: String,
    /// True when the same URL may work later (the server is starting,
    /// down or full); false when something must change first (a
    /// password, a database name, the URL itself).
    pub(crate) transient: bool,
}

impl ConnectFailure {
    /// The reason and what retrying can do, as one sentence.
    pub(crate) fn message(&self) -> String {
        let advice = if self.transient {
            "retrying may help once the server is up and reachable"
        } else {
            "retrying will not help until the URL or the server's \
             configuration changes"
        };
        format!("{} ({advice})", self.reason)
    }

    /// Carried through the pool, which wants a diesel error: the variant
    /// keeps whether retrying can help.
    fn into_diesel(self) -> ConnectionError {
        if self.transient {
            ConnectionError::BadConnection(self.reason)
        } else {
            ConnectionError::InvalidConnectionUrl(self.reason)
        }
    }

    /// Back from the pool's error.
    pub(crate) fn from_pool(error: &PoolError) -> ConnectFailure {
        match error {
            PoolError::ConnectionError(ConnectionError::BadConnection(r)) => {
                ConnectFailure {
                    reason: r.clone(),
                    transient: true,
                }
            }
            PoolError::ConnectionError(
                ConnectionError::InvalidConnectionUrl(r),
            ) => ConnectFailure {
                reason: r.clone(),
                transient: false,
            },
            other => ConnectFailure {
                reason: other.to_string(),
                transient: true,
            },
        }
    }
}

/// Checks that `url` is a connection string the driver understands (a
/// `postgresql://` URL, multi-host and Unix-socket forms included, or
/// `key=value` pairs), without connecting.
pub(crate) fn parse(url: &str) -> Result<tokio_postgres::Config, String> {
    tokio_postgres::Config::from_str(&split_query_lists(url))
        .map_err(|e| e.to_string())
}

/// `...?host=/a,/b&port=1,2` as `...?host=/a&host=/b&port=1&port=2`:
/// libpq takes a comma-separated list in a query parameter, but the
/// driver only splits lists in the URL's authority and takes a repeated
/// parameter instead. Other URLs and `key=value` strings pass unchanged.
fn split_query_lists(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return url.to_owned();
    }
    let pairs: Vec<String> = query
        .split('&')
        .flat_map(|pair| match pair.split_once('=') {
            Some((key @ ("host" | "hostaddr" | "port"), values))
                if values.contains(',') =>
            {
                values.split(',').map(|v| format!("{key}={v}")).collect()
            }
            _ => vec![pair.to_owned()],
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// Opens connections the way every Baton connection is opened.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    config: Result<tokio_postgres::Config, String>,
    /// What every new connection runs first.
    setup: Arc<str>,
}

/// How long a TCP connection may be silent before the system starts
/// probing it, and then between probes; three unanswered probes close it.
/// A peer that vanished (a database node reset without a FIN) is then
/// noticed in about 25 s instead of the system default of two hours.
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

impl Connector {
    pub(crate) fn new(
        url: &str,
        setup: Arc<str>,
        connect_timeout: Duration,
    ) -> Connector {
        let config = parse(url).map(|mut config| {
            config
                .connect_timeout(connect_timeout)
                .keepalives(true)
                .keepalives_idle(KEEPALIVE_IDLE)
                .keepalives_interval(KEEPALIVE_INTERVAL)
                .keepalives_retries(KEEPALIVE_RETRIES);
            config
        });
        Connector { config, setup }
    }

    /// A new connection, set up; or why there is none.
    pub(crate) async fn connect(
        &self,
    ) -> Result<AsyncPgConnection, ConnectFailure> {
        let config = self.config.as_ref().map_err(|e| ConnectFailure {
            reason: format!("the database URL is malformed: {e}"),
            transient: false,
        })?;
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| classify(&e))?;
        let mut conn = AsyncPgConnection::try_from_client_and_connection(
            client, connection,
        )
        .await
        .map_err(|e| ConnectFailure {
            reason: e.to_string(),
            transient: true,
        })?;
        conn.batch_execute(&self.setup)
            .await
            .map_err(|e| ConnectFailure {
                reason: format!("the connection's set-up failed: {e}"),
                transient: true,
            })?;
        Ok(conn)
    }

    /// [`Connector::connect`] as the pool wants it.
    pub(crate) async fn connect_for_pool(
        &self,
    ) -> Result<AsyncPgConnection, ConnectionError> {
        self.connect().await.map_err(ConnectFailure::into_diesel)
    }
}

/// The server's or the system's reason, and whether it may pass.
fn classify(error: &tokio_postgres::Error) -> ConnectFailure {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        // Starting up, shutting down, or full: it passes. Anything else
        // the server refuses (a password, a role, a database that does
        // not exist) stays refused until someone changes it.
        let transient = [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
        ]
        .contains(code);
        return ConnectFailure {
            reason: format!(
                "the server refused the connection: {} (SQLSTATE {})",
                db.message(),
                code.code()
            ),
            transient,
        };
    }
    let io = std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<std::io::Error>());
    // The driver's own text leaves the system's reason out.
    let said = match io {
        Some(io) => format!("{error}: {io}"),
        None => error.to_string(),
    };
    let reason = match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::NotFound) => format!(
            "no server socket where the URL points (is the server running, \
             and is the socket directory right?): {said}"
        ),
        Some(std::io::ErrorKind::ConnectionRefused) => format!(
            "connection refused: no server listens where the URL points: \
             {said}"
        ),
        _ => said,
    };
    ConnectFailure {
        reason,
        transient: true,
    }
}

/// The pool's error sink: every failed connection attempt, published.
#[derive(Clone, Debug)]
pub(crate) struct FailureSink(
    pub(crate) Arc<watch::Sender<Option<ConnectFailure>>>,
);

impl bb8::ErrorSink<PoolError> for FailureSink {
    fn sink(&self, error: PoolError) {
        self.0.send_replace(Some(ConnectFailure::from_pool(&error)));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}
