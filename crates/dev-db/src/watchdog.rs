//! Cleaning up after an owner that cannot: a throwaway server outlives a
//! process killed with SIGKILL (no destructor runs), so each one gets a
//! watchdog, and directories that still escape are reaped later.
//!
//! The watchdog is a small shell process reading a pipe whose only writer
//! is the owner. The owner tells it each server's pid (`server primary
//! N`, `server standby N`; no pid: stopped), and each other process's
//! with the signal that ends it (`process patroni_n0 N KILL`), and, when
//! it has cleaned up itself, stands it down (`done`). If the pipe closes
//! without `done`, the owner died: the watchdog ends the processes, then
//! every postmaster named in a `*/data/postmaster.pid` under the directory
//! (SIGQUIT, PostgreSQL's immediate shutdown), and removes the directory.
//! It ignores SIGINT, SIGTERM and SIGHUP, which a terminal sends to the
//! whole process group, so that a Ctrl-C still gets the cleanup.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime};

use camino::Utf8Path;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use slog::{Logger, info, warn};

/// The watchdog's script: `$1` is the directory to remove.
const SCRIPT: &str = r#"
trap '' INT TERM HUP
names=
while read -r word name pid sig; do
    case "$word" in
        server|process)
            case "$name" in ''|*[!a-z0-9_]*) continue ;; esac
            [ "$word" = server ] && sig=QUIT
            case "$sig" in QUIT|KILL|TERM) ;; *) sig=QUIT ;; esac
            eval "pid_$name=\$pid; sig_$name=\$sig"
            case " $names " in *" $name "*) ;; *) names="$names $name" ;; esac ;;
        done) exit 0 ;;
    esac
done
all=
for name in $names; do
    eval "pid=\$pid_$name; sig=\$sig_$name"
    [ -n "$pid" ] && kill -"$sig" "$pid" 2>/dev/null && all="$all $pid"
done
for f in "$1"/*/data/postmaster.pid; do
    [ -f "$f" ] || continue
    read -r pid < "$f" && kill -QUIT "$pid" 2>/dev/null && all="$all $pid"
done
for pid in $all; do
    n=0
    while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 300 ]; do
        sleep 0.1; n=$((n + 1))
    done
done
rm -rf -- "$1"
"#;

/// The file in a server directory naming the process that owns it.
const OWNER_FILE: &str = "baton-owner.pid";

/// The file that marks a directory kept on purpose (a failed test's).
pub(crate) const KEPT_FILE: &str = "baton-kept";

/// The owner's end of a watchdog.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts a watchdog for `dir`, and records this process as its owner.
    pub(crate) fn start(dir: &Utf8Path) -> std::io::Result<Watchdog> {
        std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())?;
        let mut child = Command::new("/bin/sh")
            .args(["-c", SCRIPT, "baton-dev-db-watchdog"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Watchdog { child, pipe })
    }

    /// The server in `role` (`primary` or `standby`) now runs as `pid`
    /// (`None`: it is stopped).
    pub(crate) fn server(&mut self, role: &str, pid: Option<u32>) {
        let line = match pid {
            Some(pid) => format!("server {role} {pid}\n"),
            None => format!("server {role}\n"),
        };
        self.say(&line);
    }

    /// Another process `name` (letters, digits, `_`) now runs as `pid`
    /// (`None`: it stopped), to be ended with `signal` (`QUIT`, `KILL` or
    /// `TERM`). Every postmaster under the directory is ended too.
    pub(crate) fn process(
        &mut self,
        name: &str,
        pid: Option<u32>,
        signal: &str,
    ) {
        let line = match pid {
            Some(pid) => format!("process {name} {pid} {signal}\n"),
            None => format!("process {name}\n"),
        };
        self.say(&line);
    }

    /// The owner cleaned up itself: the watchdog exits doing nothing.
    pub(crate) fn stand_down(mut self) {
        self.say("done\n");
        self.pipe = None;
        let _ = self.child.wait();
    }

    fn say(&mut self, line: &str) {
        if let Some(pipe) = &mut self.pipe {
            // A watchdog that died cannot be told; the reaper remains.
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

/// Removes the `baton-pg-*` directories under `root` whose owner process
/// is gone and whose server is not running: what escaped a watchdog (a
/// machine that lost power, a watchdog killed with its owner). Kept
/// directories and directories younger than a minute (being set up right
/// now) are left alone.
pub(crate) fn reap_orphans(root: &Utf8Path, log: &Logger) {
    let Ok(entries) = root.read_dir_utf8() else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_ours = entry.file_name().starts_with("baton-pg-")
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if is_ours && is_orphan(dir) {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => info!(log, "removed an orphaned server directory";
                    "dir" => %dir),
                Err(e) => warn!(log, "cannot remove an orphaned server \
                    directory"; "dir" => %dir, "error" => %e),
            }
        }
    }
}

fn is_orphan(dir: &Utf8Path) -> bool {
    if dir.join(KEPT_FILE).exists() {
        return false;
    }
    let young = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age < Duration::from_secs(60));
    if young {
        return false;
    }
    let owner = pid_in(&dir.join(OWNER_FILE));
    // A directory from before owners were recorded has none: its server
    // decides.
    if owner.is_some_and(alive) {
        return false;
    }
    !pid_in(&dir.join("data/postmaster.pid")).is_some_and(alive)
}

/// The pid on the first line of `file`.
pub(crate) fn pid_in(file: &Utf8Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// True if a process `pid` exists (one of another user's counts) and has
/// not exited: a zombie, ended but not yet reaped by its parent (a
/// detached process this one started), does not count.
pub(crate) fn alive(pid: i32) -> bool {
    let exists = !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH));
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
}
