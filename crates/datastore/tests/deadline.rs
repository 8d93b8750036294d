//! A server that stops answering cannot hang a drain: every connection
//! has TCP keepalives, and a statement waiting longer than the deadline
//! fails, its connection discarded and its claim released.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::sql::statement;
use baton_datastore::{DataStore, DataStoreConfig, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

use crate::common::{TestDb, log};

/// A TCP proxy to the server's Unix socket. Once frozen it goes on
/// reading both sides but forwards nothing, and keeps every connection
/// open: a server that stopped answering behind a live TCP peer, which
/// keepalives cannot notice.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(socket: PathBuf) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = UnixStream::connect(&socket).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, flag.clone()));
                tokio::spawn(pump(sr, cw, flag.clone()));
            }
        });
        Proxy { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if AtomicBool::load(&frozen, Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The client sockets to `port` as `ss` shows them, timers included.
fn sockets_to(port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tno", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_server_never_answers_fails_at_the_deadline() {
    let t = TestDb::new().await;
    let proxy = Proxy::start(t.db.dir().join(".s.PGSQL.5432").into()).await;
    let url = format!("postgresql://baton@127.0.0.1:{}/baton", proxy.port);
    let ds = DataStore::with_config(
        &log(),
        &url,
        DataStoreConfig {
            statement_deadline: Duration::from_secs(2),
            ..DataStoreConfig::default()
        },
    );
    let mut claim = ds.claim("ledger job").await.unwrap();
    claim
        .transaction("before", async |conn| {
            statement("SELECT 1").execute(conn).await?;
            Ok(())
        })
        .await
        .unwrap();
    // Every TCP connection probes its peer: the system shows the timer.
    let sockets = sockets_to(proxy.port);
    assert!(
        sockets.contains("keepalive"),
        "no keepalive timer: {sockets}"
    );

    proxy.freeze();
    let stuck = claim
        .transaction("stuck", async |conn| {
            statement("SELECT 1").execute(conn).await?;
            Ok(())
        })
        .await
        .unwrap_err();
    match stuck {
        Error::Connection { message, .. } => {
            assert!(message.contains("statement deadline"), "{message}");
        }
        other => panic!("not the deadline: {other:?}"),
    }
    // The claim goes back (its connection discarded), and the drain ends.
    drop(claim);
    ds.quiesce();
    ds.wait_for_drain().await;
    assert_eq!(ds.outstanding_claims(), 0);
}
