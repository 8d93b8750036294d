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

use baton_types::NexusRecordState;
use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
use diesel::ConnectionError;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Uuid};
use diesel_async::pooled_connection::PoolError;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;

use crate::DataStoreConfig;
use crate::guards::Isolation;
use crate::queries::FenceLock;
use crate::schema::RecordState;
use crate::statement::{Bind, load_one, statement};

/// Why a connection could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConnectFailure {
    /// The cause, in the server's or the system's words.
    pub(crate) reason: String,
    /// True when the same URL may work later (the server is starting,
    /// down or full); false when something must change first (a
    /// password, a database name, the URL itself).
    pub(crate) transient: bool,
    /// Set when the database fence refused the connection: the Nexus's
    /// record is in this state (`None`: it has none), not `active`.
    pub(crate) fenced: Option<Option<NexusRecordState>>,
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
    pub(crate) fn into_diesel(self) -> ConnectionError {
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
                    fenced: None,
                }
            }
            PoolError::ConnectionError(
                ConnectionError::InvalidConnectionUrl(r),
            ) => ConnectFailure {
                reason: r.clone(),
                transient: false,
                fenced: None,
            },
            other => ConnectFailure {
                reason: other.to_string(),
                transient: true,
                fenced: None,
            },
        }
    }
}

/// Checks that `url` is a connection string the driver understands (a
/// `postgresql://` URL, multi-host and Unix-socket forms included, or
/// `key=value` pairs), without connecting.
pub(crate) fn parse(url: &str) -> Result<tokio_postgres::Config, String> {
    diagnose(url)?;
    tokio_postgres::Config::from_str(&split_query_lists(url)).map_err(|e| {
        // The driver's own text ("invalid connection string") names no
        // part; its source, where there is one, does.
        match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => format!("{e} ({})", redact_url(url)),
        }
    })
}

/// The URL's parts the driver would misread or only report as "invalid
/// connection string", named: an empty URL, another scheme, a bad
/// percent escape (which the driver would send to a name lookup), a
/// port that is not a number.
fn diagnose(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("the database URL is empty".to_owned());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        // `key=value` pairs: the driver's own parser names the part.
        return Ok(());
    };
    if scheme != "postgresql" && scheme != "postgres" {
        return Err(format!(
            "the scheme `{scheme}://` is not `postgresql://` (or \
             `postgres://`)"
        ));
    }
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !host.ends_with(']') => (name, Some(port)),
            _ => (host, None),
        };
        bad_escape(name).map_err(|e| format!("the host `{name}` {e}"))?;
        if let Some(port) = port
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(format!(
                "the port `{port}` of host `{name}` is not a port number \
                 (1 to 65535)"
            ));
        }
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        bad_escape(value)
            .map_err(|e| format!("the value of `{key}` in the query {e}"))?;
    }
    Ok(())
}

/// Every `%` must start an escape of two hex digits.
fn bad_escape(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!(
                    "has a bad percent escape at `{}`",
                    &text[i..(i + 3).min(text.len())]
                ));
            }
        }
    }
    Ok(())
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
    /// Connections to `url`, set up for `config` at `isolation`.
    pub(crate) fn new(
        url: &str,
        config: &DataStoreConfig,
        isolation: Isolation,
    ) -> Connector {
        let mut setup = format!(
            "SET default_transaction_isolation TO '{}';",
            isolation.as_sql()
        );
        if let Some(name) = &config.application_name {
            setup.push_str(&format!(
                "SET application_name TO {};",
                literal(name)
            ));
        }
        let setup: Arc<str> = Arc::from(setup);
        let connect_timeout = config.connect_timeout;
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
            fenced: None,
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
            fenced: None,
        })?;
        conn.batch_execute(&self.setup)
            .await
            .map_err(|e| set_up_failed("the connection's set-up", &e))?;
        Ok(conn)
    }

    /// Enrols `conn` in Nexus `nexus_id`'s database fence: takes its
    /// fence lock shared, for the session's life, then (in a statement
    /// of its own, whose snapshot is taken after the lock was granted)
    /// checks that its record is `active` or that no record exists yet.
    /// Refused otherwise, and the caller drops the connection, which
    /// releases the lock. See `PROTOCOL.md`, "The database fence".
    pub(crate) async fn enrol(
        &self,
        conn: &mut AsyncPgConnection,
        nexus_id: OmicronZoneUuid,
        lock: FenceLock,
    ) -> Result<(), ConnectFailure> {
        #[derive(QueryableByName)]
        struct Standing {
            #[diesel(sql_type = BigInt)]
            records: i64,
            /// As text (see `RecordState`'s `FromSql<Text>`).
            #[diesel(sql_type = Nullable<Text>)]
            state: Option<RecordState>,
        }
        statement(FenceLock::ENROL)
            .bind::<Integer, _>(lock.high)
            .bind::<Integer, _>(lock.low)
            .execute(conn)
            .await
            .map_err(|e| set_up_failed("taking the fence lock", &e))?;
        let standing: Standing = load_one(
            statement(FenceLock::STANDING)
                .bind::<Uuid, _>(nexus_id.into_untyped_uuid()),
            conn,
        )
        .await
        .map_err(|e| set_up_failed("checking the Nexus's record", &e))?;
        let state = standing.state.map(|s| s.0);
        if standing.records == 0 || state == Some(NexusRecordState::Active) {
            return Ok(());
        }
        Err(ConnectFailure {
            reason: format!(
                "the database fence refused Nexus {nexus_id}: its record is \
                 {}, not active",
                state.map_or("missing".to_owned(), |s| s.to_string())
            ),
            transient: false,
            fenced: Some(state),
        })
    }
}

/// A set-up statement failed: the connection is unusable, but a new one
/// may work.
fn set_up_failed(what: &str, e: &dyn std::fmt::Display) -> ConnectFailure {
    ConnectFailure {
        reason: format!("{what} failed: {e}"),
        transient: true,
        fenced: None,
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
            fenced: None,
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
        fenced: None,
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

/// The URL with any password replaced by `****`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    // Forms the URL parser refuses keep the hand-written redaction: a
    // multi-host URL (`h1:5432,h2:5433` is not one host and port), and a
    // `key=value` string, which is not a URL at all and passes unchanged,
    // as it always has.
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_by_hand(url);
    };
    if parsed.password().is_some() && parsed.set_password(Some("****")).is_err()
    {
        return redact_by_hand(url);
    }
    // The raw query, not `query_pairs`: re-encoding would turn a socket
    // path's `/` into `%2F` and make the redacted URL differ needlessly.
    if let Some(query) = parsed.query() {
        let query = redact_query(query);
        parsed.set_query(Some(&query));
    }
    parsed.into()
}

/// A query string with every `...password=` parameter's value replaced.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|part| match part.split_once("password=") {
            Some((before, _)) => format!("{before}password=****"),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// [`redact_url`] for the forms the URL parser refuses.
fn redact_by_hand(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let mut out = url[..scheme_end].to_owned();
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":****");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_query(&rest[authority_end..]));
    out
}

/// Checks, without connecting, that `url` is a connection string the
/// driver understands: a `postgresql://` URL (Unix-socket and multi-host
/// forms included, e.g. `postgresql:///baton?host=/a,/b&
/// target_session_attrs=read-write`) or `key=value` pairs. A malformed
/// one is bad input that no retry fixes.
///
/// ```
/// assert!(baton_datastore::check_url("postgresql://u@%2Ftmp/db").is_ok());
/// assert!(baton_datastore::check_url("postgresql://u@h:notaport/db").is_err());
/// ```
pub fn check_url(url: &str) -> Result<(), crate::Error> {
    parse(url).map(|_| ()).map_err(crate::Error::MalformedUrl)
}

/// The hosts `url` names, in its order, each as `HOST:PORT` (a socket
/// directory as `DIR:PORT`), for saying where a connection was tried;
/// empty when the URL is malformed or names none (the driver's default).
///
/// ```
/// assert_eq!(
///     baton_datastore::url_hosts("postgresql://u@10.0.0.1,10.0.0.2:5433/db"),
///     ["10.0.0.1:5432", "10.0.0.2:5433"],
/// );
/// ```
pub fn url_hosts(url: &str) -> Vec<String> {
    let Ok(config) = parse(url) else {
        return Vec::new();
    };
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => {
                    format!("{name}:{port}")
                }
                tokio_postgres::config::Host::Unix(dir) => {
                    format!("{}:{port}", dir.display())
                }
            }
        })
        .collect()
}

/// A SQL string literal (single quotes doubled).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, want) in [
            (
                "postgresql://u:secret@host/db",
                "postgresql://u:****@host/db",
            ),
            ("postgresql://u@%2Ftmp/db", "postgresql://u@%2Ftmp/db"),
            (
                "postgresql:///db?host=/tmp&password=secret",
                "postgresql:///db?host=/tmp&password=****",
            ),
            ("postgresql://h:5432/db", "postgresql://h:5432/db"),
            (
                "postgresql://u:secret@h1:5432,h2:5433/db",
                "postgresql://u:****@h1:5432,h2:5433/db",
            ),
            (
                "postgresql://u:secret@[::1]:5432/db?sslmode=disable",
                "postgresql://u:****@[::1]:5432/db?sslmode=disable",
            ),
            (
                "postgresql:///db?host=/a,/b&password=secret&\
                 target_session_attrs=read-write",
                "postgresql:///db?host=/a,/b&password=****&\
                 target_session_attrs=read-write",
            ),
            ("host=/tmp dbname=baton", "host=/tmp dbname=baton"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, want);
            assert!(!got.contains("secret"));
        }
    }
}

#[cfg(test)]
mod diagnosis {
    use super::parse;

    /// Each malformed URL is refused naming its bad part (and a bad
    /// escape never reaches a name lookup); good forms pass.
    #[test]
    fn malformed_urls_name_the_bad_part() {
        for (url, said) in [
            ("", "the database URL is empty"),
            ("   ", "the database URL is empty"),
            ("mysql://x/y", "the scheme `mysql://`"),
            (
                "postgresql://alice:pw@%zz/baton",
                "the host `%zz` has a bad percent escape at `%zz`",
            ),
            (
                "postgresql://u@h:notaport/db",
                "the port `notaport` of host `h` is not a port number",
            ),
            ("postgresql://u@h:0/db", "the port `0` of host `h`"),
            (
                "postgresql://u@h/db?host=%zz",
                "the value of `host` in the query has a bad percent escape",
            ),
        ] {
            let err = parse(url).expect_err(url);
            assert!(err.contains(said), "{url:?}: {err}");
            assert!(!err.contains("pw"), "{url:?}: {err}");
        }
        for url in [
            "postgresql://u@%2Ftmp/db",
            "postgresql:///db?host=/a,/b&target_session_attrs=read-write",
            "postgresql://u:secret@[::1]:5432/db?sslmode=disable",
            "postgresql://u@h1:5432,h2:5433/db",
            "host=/tmp dbname=baton",
        ] {
            assert!(parse(url).is_ok(), "{url}: {:?}", parse(url));
        }
    }
}
