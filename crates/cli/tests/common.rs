//! What the command-line tests share: the fixtures, and a throwaway
//! server with the binary pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use baton_dev_db::DevDb;
use serde_json::Value;

/// The copied Omicron fixtures.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../types/tests/fixtures")
}

/// One fixture file.
pub(crate) fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The steady fixture as JSON, for tests that edit it.
pub(crate) fn steady() -> Value {
    let text = std::fs::read_to_string(fixture("01-steady.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The system's `psql`, for statements the CLI has no command for.
pub(crate) fn psql() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .map(|e| e.unwrap().path().join("bin/psql"))
        .find(|p| p.exists())
        .expect("psql")
}

/// A throwaway server and the binary pointed at it.
pub(crate) struct Env {
    pub(crate) db: DevDb,
}

impl Env {
    pub(crate) fn new() -> Env {
        let env = Env::unmigrated();
        env.ok(&["db", "migrate"]);
        env
    }

    /// A server whose database was never migrated.
    pub(crate) fn unmigrated() -> Env {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let db = DevDb::builder()
            .template_cache(env!("CARGO_TARGET_TMPDIR"))
            .start(&log)
            .unwrap();
        Env { db }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        baton_at(&self.db.url(), args)
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    pub(crate) fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        String::from_utf8(out.stderr).unwrap()
    }

    /// Runs `sql` through `psql`, which must succeed.
    pub(crate) fn sql(&self, sql: &str) {
        let status = Command::new(psql())
            .arg(self.db.url())
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{sql}");
    }

    /// `baton ARGS` running, its stdout read line by line.
    pub(crate) fn spawn(
        &self,
        args: &[&str],
    ) -> (
        std::process::Child,
        std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    ) {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .env("BATON_DATABASE_URL", self.db.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines =
            std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// The records as (id, state) pairs, sorted by id.
    pub(crate) fn records(&self) -> Vec<(String, String)> {
        self.json(&["records", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["nexus_id"].as_str().unwrap().to_owned(),
                    r["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// Runs `baton` on the database at `url`, with no standard input; it
/// must not panic, whatever it answers.
pub(crate) fn baton_at(url: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env("BATON_DATABASE_URL", url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    out
}
