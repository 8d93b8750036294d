//! No flag value makes `baton-ledger` panic: every numeric flag, at and
//! beyond its documented bounds, is refused with exit 2 and a sentence
//! naming the flag, before the service starts.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Values beyond the bounds of each numeric flag.
const EXTREMES: &[(&str, &[&str])] = &[
    (
        "--write-period-ms",
        &[
            "0",
            "3600001",
            "18446744073709551615",
            "18446744073709551616",
        ],
    ),
    ("--job-ms", &["86400001", "18446744073709551615", "-1"]),
    (
        "--period-ms",
        &["0", "86400001", "18446744073709551615", "1e20", ""],
    ),
    ("--schema-version", &["0", "3", "9223372036854775808", "-1"]),
];

#[test]
fn every_numeric_flag_beyond_its_bounds_is_refused_without_a_panic() {
    let mut cases = 0;
    for (flag, values) in EXTREMES {
        for value in *values {
            let child = Command::new(env!("CARGO_BIN_EXE_baton-ledger"))
                .args([
                    // Nothing listens there: a ledger that started would
                    // wait for it rather than exit.
                    "--database-url",
                    "postgresql://baton@%2Fnonexistent/baton",
                    "--nexus-id",
                    "e5121482-3929-4d22-a255-accb1a466884",
                    "--schema-version",
                    "1",
                ])
                .arg(format!("{flag}={value}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id().to_string();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || tx.send(child.wait_with_output()));
            // Bounded: a ledger that took the value runs until killed.
            let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("{flag}={value} was taken: the ledger ran on");
            };
            let out = out.unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let status = out.status;
            assert_eq!(status.code(), Some(2), "{flag}={value}: {err}");
            assert!(!err.contains("panicked"), "{flag}={value}: {err}");
            assert!(err.contains(flag), "{flag}={value}: {err}");
            cases += 1;
        }
    }
    eprintln!("{cases} extreme flag values refused with exit 2");
}

/// A malformed or empty database URL is bad input for the ledger too:
/// exit 2 at once, naming the bad part (it used to exit 1, and an empty
/// URL was retried for ever).
#[test]
fn a_malformed_database_url_is_refused_at_once_with_exit_2() {
    for (url, said) in [
        ("", "the database URL is empty"),
        (
            "postgresql://alice:pw@%zz/baton",
            "the host `%zz` has a bad",
        ),
    ] {
        let child = Command::new(env!("CARGO_BIN_EXE_baton-ledger"))
            .args(["--database-url", url, "--schema-version", "1"])
            .args(["--nexus-id", "e5121482-3929-4d22-a255-accb1a466884"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        // Bounded: a ledger that took the URL would retry until killed.
        let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{url:?} was taken: the ledger ran on");
        };
        let out = out.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url:?}: {err}");
        assert!(err.contains(said), "{url:?}: {err}");
        assert!(!err.contains("pw"), "{url:?}: {err}");
    }
}
