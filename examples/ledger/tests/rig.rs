//! What the tests and the handoff-window benchmark (which includes this
//! file by path) share: a throwaway server at rack setup, waits on the
//! database, and `baton-ledger` processes with the JSON lines they print
//! on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baton_datastore::DataStore;
use baton_dev_db::DevDb;
use baton_types::Blueprint;
use baton_types::story::HandoffStory;
use baton_uuid_kinds::OmicronZoneUuid;
use serde_json::Value;

pub(crate) use baton_test_utils::log;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

pub(crate) async fn import(ds: &DataStore, blueprint: &Blueprint) {
    ds.blueprint_insert(blueprint).await.expect("stored");
    ds.target_set(blueprint.id(), true)
        .await
        .expect("target set");
}

/// Stores `blueprint` and makes it the target.
/// Polls the database until `done` (the processes act on their own
/// schedule; there is nothing else to wait on), or panics naming `what`
/// after `patience`.
pub(crate) async fn until<F, Fut>(what: &str, patience: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !done().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A throwaway server set up as at rack setup: Baton's schema, the
/// generation-1 records `active`, the steady blueprint the target. The
/// server lives as long as the returned `DevDb`.
pub(crate) fn rack_at_generation_1(
    rt: &tokio::runtime::Runtime,
    story: &HandoffStory,
) -> (DevDb, String, DataStore) {
    let db = DevDb::builder()
        .template_cache(env!("CARGO_TARGET_TMPDIR"))
        .start(&log())
        .expect("a throwaway PostgreSQL");
    let url = db.url();
    let ds = rack_setup(rt, &url, story);
    (db, url, ds)
}

/// The database at `url` set up as at rack setup (Baton's schema, the
/// generation-1 records `active`, the steady blueprint the target), and
/// a datastore on it.
pub(crate) fn rack_setup(
    rt: &tokio::runtime::Runtime,
    url: &str,
    story: &HandoffStory,
) -> DataStore {
    let ds = {
        let _inside = rt.enter();
        DataStore::new(&log(), url)
    };
    rt.block_on(async {
        ds.migrate().await.expect("Baton's schema");
        let old = story.old_nexus.iter().copied().collect();
        ds.records_initialize(&old).await.expect("rack setup");
        import(&ds, &story.steady).await;
    });
    ds
}

/// A running `baton-ledger` and what it printed so far.
pub(crate) struct Ledger {
    pub(crate) id: OmicronZoneUuid,
    child: Child,
    lines: mpsc::Receiver<Value>,
    pub(crate) seen: Vec<Value>,
    /// How long any one wait on it may take before giving up.
    patience: Duration,
}

impl Ledger {
    /// Starts `command` (a `baton-ledger` with its arguments) as Nexus
    /// `id`, its stdout read line by line.
    pub(crate) fn start(
        mut command: Command,
        id: OmicronZoneUuid,
        patience: Duration,
    ) -> Ledger {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("baton-ledger starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Ledger {
            id,
            child,
            lines,
            seen: Vec::new(),
            patience,
        }
    }

    /// Waits until it prints `state` (or fails, naming what it printed).
    pub(crate) fn wait_state(&mut self, state: &str) {
        let deadline = Instant::now() + self.patience;
        loop {
            if self.seen.iter().any(|l| l["state"] == state) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "ledger {} never reached {state}; it printed {:?}",
                    self.id, self.seen
                ),
            }
        }
    }

    /// Takes in whatever it printed so far, without waiting; true if it
    /// printed `state`.
    #[allow(dead_code)] // The benchmark, which includes this file, never polls.
    pub(crate) fn printed(&mut self, state: &str) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().any(|l| l["state"] == state)
    }

    /// Waits for it to exit; returns the status and its last line.
    pub(crate) fn wait_exit(mut self) -> (ExitStatus, Value) {
        let deadline = Instant::now() + self.patience;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Whatever it printed before exiting is in the pipe.
                while let Ok(line) =
                    self.lines.recv_timeout(Duration::from_secs(5))
                {
                    self.seen.push(line);
                }
                let last = self.seen.last().cloned().unwrap_or_default();
                return (status, last);
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50))
            {
                self.seen.push(line);
            }
            assert!(
                Instant::now() < deadline,
                "ledger {} did not exit; it printed {:?}",
                self.id,
                self.seen
            );
        }
    }

    /// Sends it `signal` (as `kill` spells it: `-TERM`).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// SIGKILL, and reaps it.
    #[allow(dead_code)] // The benchmark kills none.
    pub(crate) fn kill(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Ledger {
    /// A failed run must not leave its processes running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
