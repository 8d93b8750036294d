//! `--metrics-addr`: Baton's metrics in the
//! Prometheus text format, over plain HTTP, for whoever scrapes them,
//! and beside them the instance's readiness (`GET /ready`, for a load
//! balancer's probe) and one write (`POST /write`, a request as a client
//! of the service would make it; `POST /write?id=UUID` names the entry).
//!
//! The exporter only renders; this file answers the requests itself, so
//! the example needs no HTTP server crate. Whoever can reach the port
//! cannot starve it: at most [`MAX_CONNECTIONS`] are served at once (one
//! more is told 503 and closed), a connection that sends no whole request
//! within [`IDLE_TIMEOUT`] is closed, and a failed accept (out of
//! descriptors) backs off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::service::{App, AppSlot, unavailable};

/// Connections served at once, at most.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send its request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause after failed accepts, doubling from 10 ms.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Installs the Prometheus recorder and listens on `addr`; prints the
/// bound address as a JSON line (`{"metrics_addr": "..."}`), which
/// matters when the port was 0. An error names the address and why.
pub(crate) async fn serve(
    addr: SocketAddr,
    app: AppSlot,
) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the metrics address: {e}"))?;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    println!("{}", json!({ "metrics_addr": bound.to_string() }));
    tokio::spawn(accept(listener, handle, app));
    Ok(())
}

/// The accept loop: bounded connections, backing off on failure.
async fn accept(listener: TcpListener, handle: PrometheusHandle, app: AppSlot) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(_) => {
                // Out of descriptors (EMFILE) or a connection reset
                // before it was taken: the next accept would fail the
                // same way at once, so wait instead of spinning.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let handle = handle.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(
                        IDLE_TIMEOUT,
                        answer(&mut stream, handle, app),
                    )
                    .await;
                });
            }
            Err(_) => {
                let _ = stream
                    .write_all(&response(
                        "503 Service Unavailable",
                        "too many connections\n",
                    ))
                    .await;
            }
        }
    }
}

/// A whole response with `status` and `body`; the connection closes.
fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers one request: the metrics for `GET /metrics`, the readiness
/// for `GET /ready`, one write for `POST /write`, 404 otherwise.
async fn answer(
    stream: &mut TcpStream,
    handle: PrometheusHandle,
    app: AppSlot,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The request head, up to 8 KiB; a client that sends more is odd.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let first = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, body) = if first.starts_with(b"GET /metrics ") {
        handle.run_upkeep();
        ("200 OK", handle.render())
    } else if first.starts_with(b"GET /ready ") {
        ready(app.get())
    } else if let Some(id) = write_request(first) {
        match (app.get(), id) {
            (_, Err(bad)) => ("400 Bad Request", format!("{bad}\n")),
            (Some(app), Ok(id)) => crate::service::write(app, id).await,
            (None, _) => ("503 Service Unavailable", unavailable("starting")),
        }
    } else {
        (
            "404 Not Found",
            "only GET /metrics, GET /ready and POST /write are served\n"
                .to_owned(),
        )
    };
    let _ = stream.write_all(&response(status, &body)).await;
    let _ = stream.shutdown().await;
}

/// The entry id of a `POST /write` request line, if it is one: `POST
/// /write` (the service picks the id) or `POST /write?id=UUID` (the
/// client picks it, so that it can look for its write later even when
/// the answer never came, as a history checker does).
fn write_request(line: &[u8]) -> Option<Result<Option<uuid::Uuid>, String>> {
    if line.starts_with(b"POST /write ") {
        return Some(Ok(None));
    }
    let rest = line.strip_prefix(b"POST /write?id=")?;
    let id = rest.split(|b| *b == b' ').next().unwrap_or_default();
    let id = String::from_utf8_lossy(id);
    Some(
        uuid::Uuid::parse_str(&id)
            .map(Some)
            .map_err(|e| format!("id {id:?} is not a UUID: {e}")),
    )
}

/// `GET /ready`: 200 only while the instance takes new work, 503
/// otherwise; the body is one JSON line with the readiness and why.
fn ready(app: Option<&App>) -> (&'static str, String) {
    let Some(app) = app else {
        let line = json!({ "readiness": "soon", "reason": "starting" });
        return ("503 Service Unavailable", format!("{line}\n"));
    };
    let status = app.nexus.status();
    let line = json!({
        "readiness": status.readiness,
        "reason": status.state.to_string(),
    });
    let code = if status.readiness == baton_nexus::Readiness::Ready {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    (code, format!("{line}\n"))
}
