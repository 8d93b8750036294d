//! Starting and stopping real PostgreSQL servers.

use baton_dev_db::{DevDb, DevDbError, PersistentDb, PgBinaries};
use camino::{Utf8Path, Utf8PathBuf};
use camino_tempfile::Utf8TempDir;
use slog::{Logger, o};

fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// Every process whose command line mentions `dir`.
fn processes_using(dir: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(dir).then_some(cmdline)
        })
        .collect()
}

#[test]
fn throwaway_server_leaves_nothing_behind_on_drop() {
    let db = DevDb::start(&log()).unwrap();
    let dir = db.dir().to_owned();
    let proc = Utf8PathBuf::from(format!("/proc/{}", db.pid().unwrap()));
    assert!(proc.exists());
    assert!(dir.join(".s.PGSQL.5432").exists(), "socket");
    assert!(!processes_using(dir.as_str()).is_empty());
    drop(db);
    assert!(!proc.exists(), "server still runs");
    assert_eq!(processes_using(dir.as_str()), Vec::<String>::new());
    assert!(!dir.exists(), "directory left behind");
}

#[test]
fn template_cache_is_built_once_and_reused() {
    let cache = Utf8TempDir::new().unwrap();
    let cache_dir = cache.path();
    let first = DevDb::builder()
        .template_cache(cache_dir)
        .start(&log())
        .unwrap();
    let entries = |d: &Utf8Path| {
        let mut names: Vec<String> = d
            .read_dir_utf8()
            .unwrap()
            .map(|e| e.unwrap().file_name().to_owned())
            .collect();
        names.sort();
        names
    };
    let after_first = entries(cache_dir);
    assert_eq!(after_first.len(), 1, "{after_first:?}");
    let second = DevDb::builder()
        .template_cache(cache_dir)
        .start(&log())
        .unwrap();
    assert_eq!(entries(cache_dir), after_first);
    assert_ne!(first.dir(), second.dir());
    assert!(second.dir().join(".s.PGSQL.5432").exists());
}

#[test]
fn a_server_can_be_stopped_and_restarted() {
    let mut db = DevDb::start(&log()).unwrap();
    let first = db.pid().unwrap();
    db.stop_server().unwrap();
    assert!(db.pid().is_none());
    assert!(!db.dir().join(".s.PGSQL.5432").exists());
    db.restart().unwrap();
    assert_ne!(db.pid().unwrap(), first);
    assert!(db.dir().join(".s.PGSQL.5432").exists());
}

#[test]
fn missing_binaries_say_how_to_install_them() {
    let err = PgBinaries::find_in(["/nonexistent".into()]).unwrap_err();
    assert!(matches!(err, DevDbError::BinariesMissing));
    assert!(
        err.to_string().contains("apt-get install postgresql"),
        "{err}"
    );
}

#[test]
fn persistent_server_survives_stop_and_start() {
    let temp = Utf8TempDir::new().unwrap();
    let dir = temp.path().join("db");
    let db = PersistentDb::new(&dir);
    assert!(!db.is_running().unwrap());
    let url = db.start().unwrap();
    assert!(db.is_running().unwrap());
    assert_eq!(db.start().unwrap(), url, "start is idempotent");
    assert!(db.stop().unwrap());
    assert!(!db.is_running().unwrap());
    assert!(dir.join("data/PG_VERSION").exists(), "the data stays");
    assert!(!db.stop().unwrap(), "stopping twice is fine");
    db.start().unwrap();
    assert!(db.stop().unwrap());
}

/// `baton db start` from several processes at once: one starts the
/// server, the others find it running; all get the same URL.
#[test]
fn concurrent_starts_of_the_persistent_server_all_succeed() {
    let temp = Utf8TempDir::new().unwrap();
    let dir = temp.path().join("db");
    let barrier = std::sync::Barrier::new(5);
    let urls: Vec<Result<String, String>> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..5)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    PersistentDb::new(&dir).start().map_err(|e| e.to_string())
                })
            })
            .collect();
        starts.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let db = PersistentDb::new(&dir);
    for url in &urls {
        assert_eq!(url.as_deref(), Ok(db.url().as_str()), "{urls:?}");
    }
    assert!(db.stop().unwrap());
}

/// The persistent server keeps its data through a crash: `fsync` and
/// full-page writes are on (only throwaway servers turn them off).
#[test]
fn the_persistent_server_is_durable_and_throwaway_ones_are_not() {
    let opts = |data: &Utf8Path| {
        std::fs::read_to_string(data.join("postmaster.opts")).unwrap()
    };
    let temp = Utf8TempDir::new().unwrap();
    let dir = temp.path().join("db");
    let db = PersistentDb::new(&dir);
    db.start().unwrap();
    let persistent = opts(&dir.join("data"));
    db.stop().unwrap();
    let throwaway = DevDb::start(&log()).unwrap();
    let fast = opts(&throwaway.dir().join("data"));
    for setting in ["fsync=off", "full_page_writes=off"] {
        assert!(!persistent.contains(setting), "{persistent}");
        assert!(fast.contains(setting), "{fast}");
    }
}

#[test]
fn a_relative_data_dir_is_taken_from_the_current_directory() {
    let db = PersistentDb::new("some/relative/db");
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(db.dir().as_std_path(), cwd.join("some/relative/db"));
    assert!(db.url().contains("%2Fsome%2Frelative%2Fdb"), "{}", db.url());
}

/// A directory too long for the socket is refused up front, saying why,
/// and nothing is created.
#[test]
fn a_data_dir_too_long_for_the_socket_is_refused_up_front() {
    let temp = Utf8TempDir::new().unwrap();
    let dir = temp.path().join("d".repeat(100));
    let err = PersistentDb::new(&dir).start().unwrap_err();
    assert!(matches!(err, DevDbError::PathTooLong { .. }), "{err}");
    assert!(
        err.to_string().contains("choose a shorter directory"),
        "{err}"
    );
    assert!(!dir.exists());
}

/// pg_ctl only says "examine the log output": the error carries the
/// server's own reason from the log.
#[test]
fn a_failed_start_names_the_servers_reason() {
    let temp = Utf8TempDir::new().unwrap();
    let dir = temp.path().join("db");
    let db = PersistentDb::new(&dir);
    db.start().unwrap();
    db.stop().unwrap();
    let conf = dir.join("data/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nbaton_no_such_setting = 1\n");
    std::fs::write(&conf, text).unwrap();
    let err = db.start().unwrap_err().to_string();
    assert!(err.contains("baton_no_such_setting"), "{err}");
    assert!(!db.is_running().unwrap());
}

/// Waits (up to a minute) until `done` holds, polling.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        // Polling a condition, not sleeping in its place.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Not a test of its own: the process `a_killed_owners_server_is_stopped_
/// and_removed` starts and kills. It starts a server, prints its
/// directory and pid, and waits to be killed.
#[test]
#[ignore = "run by a_killed_owners_server_is_stopped_and_removed"]
fn owner_process_for_the_kill_test() {
    if std::env::var_os("BATON_DEV_DB_OWNER").is_none() {
        return;
    }
    let db = DevDb::start(&log()).unwrap();
    println!("\nserver {} {}", db.dir(), db.pid().unwrap());
    let mut line = String::new();
    // Blocks until killed (the parent never writes).
    let _ = std::io::stdin().read_line(&mut line);
    drop(db);
}

/// Starts this test binary running only `test` as an owner process, and
/// returns it with the rest of the first line it prints that starts with
/// `prefix` (libtest prints its own lines around the test's).
// The caller kills and waits for the child it is given.
#[allow(clippy::zombie_processes)]
fn start_owner(test: &str, prefix: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--ignored"])
        .args(["--nocapture", "--test-threads", "1"])
        .env("BATON_DEV_DB_OWNER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(owner.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let status = owner.wait();
            panic!("the owner ended before it printed {prefix:?}: {status:?}");
        }
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            return (owner, rest.to_owned());
        }
    }
}

#[test]
fn a_killed_owners_server_is_stopped_and_removed() {
    let (mut owner, line) =
        start_owner("owner_process_for_the_kill_test", "server ");
    let (dir, pid) = line.split_once(' ').expect("a directory and a pid");
    let dir = Utf8PathBuf::from(dir);
    let proc = Utf8PathBuf::from(format!("/proc/{pid}"));
    assert!(proc.exists() && dir.exists(), "the server runs");
    owner.kill().unwrap(); // SIGKILL: no destructor runs.
    owner.wait().unwrap();
    wait_until("the server stopped and its directory removed", || {
        !proc.exists() && !dir.exists()
    });
}

#[test]
fn orphaned_directories_are_reaped_at_the_next_start() {
    let root = Utf8PathBuf::try_from(std::env::temp_dir()).unwrap();
    let me = std::process::id();
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let make = |name: &str, owner: u32, kept: bool| {
        let dir = root.join(format!("baton-pg-reap-test-{me}-{name}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("baton-owner.pid"), owner.to_string()).unwrap();
        if kept {
            std::fs::write(dir.join("baton-kept"), "").unwrap();
        }
        let old =
            std::time::SystemTime::now() - std::time::Duration::from_secs(300);
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(old)
            .unwrap();
        dir
    };
    let orphan = make("orphan", dead, false);
    let kept = make("kept", dead, true);
    let owned = make("owned", me, false);
    let db = DevDb::start(&log()).unwrap();
    let (orphan_left, kept_left, owned_left) =
        (orphan.exists(), kept.exists(), owned.exists());
    drop(db);
    for dir in [&orphan, &kept, &owned] {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(!orphan_left, "the dead owner's directory was reaped");
    assert!(kept_left, "a kept directory stays");
    assert!(owned_left, "a live owner's directory stays");
}

/// A primary with a synchronous standby: the standby streams, a promoted
/// standby takes writes, and the failover URL finds whichever is the
/// writable one.
#[test]
fn a_standby_follows_the_primary_and_takes_over_when_promoted() {
    let mut db = DevDb::builder().standby().start(&log()).unwrap();
    let url = db.failover_url().expect("a standby");
    let psql = |url: &str, sql: &str| {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .map(|e| e.unwrap().path().join("bin/psql"))
            .find(|p| p.exists())
            .unwrap();
        let out = std::process::Command::new(bin)
            .arg(url)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    assert!(psql(&url, "CREATE TABLE t (n INT); INSERT INTO t VALUES (1)").0);
    db.kill_primary().unwrap();
    db.promote_standby().unwrap();
    // The acknowledged row is there, and the promoted standby writes.
    let (ok, rows) =
        psql(&url, "INSERT INTO t VALUES (2); SELECT count(*) FROM t");
    assert!(ok, "{rows}");
    assert_eq!(rows, "2");
    let standby = db.standby_dir().unwrap().to_owned();
    drop(db);
    assert!(!standby.exists(), "the standby's directory is removed");
}

#[test]
fn a_persistent_server_can_have_a_synchronous_standby() {
    let temp = Utf8TempDir::new().unwrap();
    let dir = temp.path().join("db");
    std::fs::create_dir_all(&dir).unwrap();
    // The server's user must reach the directory.
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let db = PersistentDb::new(&dir);
    let url = db.start_with_standby().unwrap();
    assert!(
        url.contains(",") && url.contains("target_session_attrs"),
        "{url}"
    );
    assert_eq!(db.start_with_standby().unwrap(), url, "idempotent");
    assert_eq!(db.client_url(), url);
    assert!(dir.join("standby/data/standby.signal").exists());
    assert!(db.stop().unwrap());
    assert_eq!(
        processes_using(dir.join("standby").as_str()),
        Vec::<String>::new()
    );
}

mod ha {
    //! The HA cluster: real etcd and Patroni from the system packages.

    use std::time::Duration;

    use baton_dev_db::HaCluster;
    use camino::Utf8PathBuf;
    use camino_tempfile::Utf8TempDir;

    use super::{log, processes_using, wait_until};

    fn psql(url: &str, sql: &str) -> std::process::Output {
        std::process::Command::new("psql")
            .args([url, "-Atqc", sql])
            .output()
            .expect("psql runs")
    }

    #[test]
    fn a_cluster_fails_over_when_its_leader_dies_and_takes_it_back() {
        let mut cluster = HaCluster::start(&log()).expect("an HA cluster");
        let first = cluster.leader().expect("a leader");
        let url = cluster.url();
        let out =
            psql(&url, "CREATE TABLE t (x INT); INSERT INTO t VALUES (1)");
        assert!(out.status.success(), "{out:?}");
        cluster.kill_node(first);
        // The multi-host URL reaches the new leader without any change.
        wait_until("a write through the same URL after the failover", || {
            psql(&url, "INSERT INTO t VALUES (2)").status.success()
        });
        let second = cluster.leader().expect("a new leader");
        assert_ne!(second, first);
        let rows =
            psql(&url, "SELECT string_agg(x::text, ',' ORDER BY x) FROM t");
        assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "1,2");
        // The old leader rejoins as a standby of the new one.
        cluster.start_node(first).unwrap();
        assert_eq!(
            cluster.wait_healthy(Duration::from_secs(90)).unwrap(),
            second
        );
        let on_old = psql(&cluster.node_url(first), "SELECT count(*) FROM t");
        assert_eq!(String::from_utf8_lossy(&on_old.stdout).trim(), "2");
    }

    /// Not a test of its own: the owner `a_killed_owners_cluster_...` kills.
    #[test]
    #[ignore = "run by a_killed_owners_cluster_is_stopped_and_removed"]
    fn owner_process_for_the_cluster_kill_test() {
        if std::env::var_os("BATON_DEV_DB_OWNER").is_none() {
            return;
        }
        let cluster = HaCluster::start(&log()).unwrap();
        println!("\ncluster {}", cluster.dir());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        drop(cluster);
    }

    #[test]
    fn a_killed_owners_cluster_is_stopped_and_removed() {
        let (mut owner, dir) = super::start_owner(
            "ha::owner_process_for_the_cluster_kill_test",
            "cluster ",
        );
        let dir = Utf8PathBuf::from(dir);
        // etcd ×3, Patroni ×2 and their servers name the directory.
        assert!(processes_using(dir.as_str()).len() >= 7, "the cluster runs");
        owner.kill().unwrap();
        owner.wait().unwrap();
        wait_until(
            "every process of the cluster gone, and its directory",
            || processes_using(dir.as_str()).is_empty() && !dir.exists(),
        );
    }

    #[test]
    fn a_kept_cluster_outlives_its_starter_and_stops_on_request() {
        let temp = Utf8TempDir::new().unwrap();
        // The servers run as `postgres`, which must reach the directory.
        std::fs::set_permissions(
            temp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let dir = temp.path().join("ha");
        let url = HaCluster::builder().start_in(&dir, &log()).unwrap();
        assert!(psql(&url, "SELECT 1").status.success());
        // Idempotent: a second start prints the same URL.
        let again = HaCluster::builder().start_in(&dir, &log()).unwrap();
        assert_eq!(again, url);
        assert_eq!(HaCluster::running_in(&dir).unwrap(), Some(url.clone()));
        assert!(HaCluster::stop_in(&dir).unwrap());
        wait_until("no process of the cluster left", || {
            processes_using(dir.as_str()).is_empty()
        });
        assert!(!HaCluster::stop_in(&dir).unwrap(), "nothing left to stop");
        assert_eq!(HaCluster::running_in(&dir).unwrap(), None);
    }
}
