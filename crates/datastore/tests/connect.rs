//! A connection that cannot be had says why at once, in the server's or
//! the system's words, and whether retrying can help; even when the pool
//! would wait ten minutes for a connection.

use std::time::Duration;

use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::sql::statement;
use baton_datastore::{DataStore, DataStoreConfig, Error, check_url};

use crate::common::{TestDb, log};

/// A pool that would wait ten minutes before calling a wait a timeout.
fn patient() -> DataStoreConfig {
    DataStoreConfig {
        connect_timeout: Duration::from_secs(600),
        ..DataStoreConfig::default()
    }
}

/// The failure of one operation on `url`, which must be a connection
/// failure: its message and whether it is transient.
async fn failure_on(url: &str) -> (String, bool) {
    let ds = DataStore::with_config(&log(), url, patient());
    match ds.records_list().await {
        Err(Error::Connection {
            message, transient, ..
        }) => (message, transient),
        other => panic!("{url}: not a connection failure: {other:?}"),
    }
}

async fn run(ds: &DataStore, sql: &'static str) {
    ds.run("test set-up", |conn| Box::pin(statement(sql).execute(conn)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_named_and_not_worth_retrying() {
    let t = TestDb::new().await;
    run(&t.ds, "ALTER ROLE baton PASSWORD 'right'").await;
    std::fs::write(
        t.db.dir().join("data/pg_hba.conf"),
        "local all all scram-sha-256\n",
    )
    .unwrap();
    run(&t.ds, "SELECT pg_reload_conf()").await;
    let with = |password: &str| {
        t.db.url()
            .replacen("baton@", &format!("baton:{password}@"), 1)
    };
    // The right password works, so the server does check it.
    let right = DataStore::with_config(&log(), &with("right"), patient());
    let mut checked = false;
    for _ in 0..200 {
        // The reload is asynchronous; until it lands, trust still holds.
        let (message, transient) = failure_on(&with("wrong")).await;
        if message.contains("password authentication failed") {
            assert!(!transient, "{message}");
            assert!(message.contains("retrying will not help"), "{message}");
            assert!(!message.contains("wrong"), "the password leaked");
            checked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(checked, "the server never asked for the password");
    right.records_list().await.unwrap();
}

#[tokio::test]
async fn a_missing_database_is_named_and_not_worth_retrying() {
    let t = TestDb::new().await;
    let (message, transient) = failure_on(&t.db.url_for("no_such_db")).await;
    assert!(
        message.contains("database \"no_such_db\" does not exist"),
        "{message}"
    );
    assert!(!transient, "{message}");
}

#[tokio::test]
async fn a_missing_socket_is_named_and_may_pass() {
    let (message, transient) =
        failure_on("postgresql://baton@%2Fno%2Fsuch%2Fdir/baton").await;
    assert!(message.contains("no server socket"), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(transient, "{message}");
}

#[tokio::test]
async fn a_stopped_server_is_named_and_may_pass() {
    let mut t = TestDb::new().await;
    let url = t.db.url();
    t.db.stop_server().unwrap();
    let (message, transient) = failure_on(&url).await;
    assert!(message.contains("is the server running"), "{message}");
    assert!(transient, "{message}");
    // Over TCP, nothing listening is a refused connection.
    let (message, transient) =
        failure_on("postgresql://baton@127.0.0.1:1/baton").await;
    assert!(message.contains("connection refused"), "{message}");
    assert!(transient, "{message}");
}

#[tokio::test]
async fn a_malformed_url_is_bad_input_before_and_after_connecting() {
    for url in ["postgresql://baton@host:notaport/db", "garbage ::: url"] {
        let Err(Error::MalformedUrl(reason)) = check_url(url) else {
            panic!("{url} passed the check");
        };
        assert!(!reason.is_empty());
        let (message, transient) = failure_on(url).await;
        assert!(message.contains("malformed"), "{message}");
        assert!(!transient, "{message}");
    }
    // Multi-host and Unix-socket forms are well formed.
    check_url("postgresql:///baton?host=/a,/b&target_session_attrs=read-write")
        .unwrap();
}

/// The socket directory may also come as a `host` query parameter (the
/// libpq form), one or several, with an empty host before the path.
#[tokio::test]
async fn the_query_form_of_a_socket_url_connects() {
    let t = TestDb::new().await;
    let dir = t.db.dir();
    for url in [
        format!("postgresql:///baton?host={dir}&user=baton"),
        format!(
            "postgresql:///baton?host=/no/such/dir,{dir}&user=baton\
             &target_session_attrs=read-write"
        ),
    ] {
        let ds = DataStore::with_config(&log(), &url, patient());
        ds.records_list()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
