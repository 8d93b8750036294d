//! `--metrics-addr`: Baton's metrics in the
//! Prometheus text format, over plain HTTP, for whoever scrapes them.
//!
//! The exporter only renders; this file answers `GET /metrics` itself, so
//! the example needs no HTTP server crate.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Installs the Prometheus recorder and listens on `addr`; prints the
/// bound address as a JSON line (`{"metrics_addr": "..."}`), which
/// matters when the port was 0. An error names the address and why.
pub(crate) async fn serve(addr: SocketAddr) -> Result<(), String> {
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
    tokio::spawn(async move {
        loop {
            // A failed accept (out of descriptors) only costs a scrape.
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, handle.clone()));
            }
        }
    });
    Ok(())
}

/// Answers one request: the metrics for `GET /metrics`, 404 otherwise.
async fn answer(mut stream: TcpStream, handle: PrometheusHandle) {
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
    } else {
        ("404 Not Found", "only GET /metrics is served\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
