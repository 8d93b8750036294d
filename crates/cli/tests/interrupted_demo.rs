//! `baton demo` interrupted leaves no server and no directory behind.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the demo, waits for its server, sends `signal`, and checks the
/// server is stopped and its directory removed.
fn interrupt_the_demo(signal: &str) {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("demo")
        .env_remove("BATON_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(demo.stdout.take().unwrap());
    let dir = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the demo ended");
        if let Some(dir) = line.trim().strip_prefix("ready in ") {
            break PathBuf::from(dir);
        }
    };
    let pid_file = dir.join("data/postmaster.pid");
    let server = std::fs::read_to_string(&pid_file).unwrap();
    let proc =
        PathBuf::from(format!("/proc/{}", server.lines().next().unwrap()));
    assert!(proc.exists(), "the demo's server runs");
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = demo.wait().unwrap();
    assert!(!status.success(), "an interrupted demo does not succeed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while proc.exists() || dir.exists() {
        assert!(
            Instant::now() < deadline,
            "after SIG{signal}: server running {}, directory {} left",
            proc.exists(),
            dir.display()
        );
        // Polling a condition, not sleeping in its place.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interrupted_demo_stops_its_server_and_removes_its_directory() {
    interrupt_the_demo("INT");
}

#[test]
fn a_terminated_demo_stops_its_server_and_removes_its_directory() {
    interrupt_the_demo("TERM");
}

#[test]
fn a_killed_demo_stops_its_server_and_removes_its_directory() {
    interrupt_the_demo("KILL");
}
