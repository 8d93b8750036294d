//! Finding the server binaries, and running them as the right user.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use camino::{Utf8Path, Utf8PathBuf};
use nix::unistd::{User, geteuid};

use crate::DevDbError;

/// Where the server binaries are, and who runs them.
#[derive(Clone, Debug)]
pub struct PgBinaries {
    bin: Utf8PathBuf,
    /// `(uid, gid)` of `postgres` when we are root; `None` otherwise.
    run_as: Option<(u32, u32)>,
}

impl PgBinaries {
    /// Finds the binaries: `$BATON_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/*/bin`, else `initdb` on `$PATH`.
    pub fn find() -> Result<PgBinaries, DevDbError> {
        PgBinaries::find_in(candidates())
    }

    /// Finds the binaries in the first of `dirs` that has them.
    pub fn find_in(
        dirs: impl IntoIterator<Item = Utf8PathBuf>,
    ) -> Result<PgBinaries, DevDbError> {
        let bin = dirs
            .into_iter()
            .find(|dir| {
                dir.join("initdb").is_file() && dir.join("postgres").is_file()
            })
            .ok_or(DevDbError::BinariesMissing)?;
        let run_as = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        Ok(PgBinaries { bin, run_as })
    }

    /// A command for one of the binaries, run as the server's user.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        // The server's locale messages and `HOME` are not ours to inherit.
        command.env("LC_ALL", "C").env_remove("PGDATA");
        command
    }

    /// Runs `command` (another program, Patroni) as the server's user.
    pub(crate) fn as_server_user(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
    }

    /// The directory the binaries are in (`psql` for a client too).
    pub fn bin_dir(&self) -> &Utf8Path {
        &self.bin
    }

    /// Runs a binary to completion, failing with its output.
    pub(crate) fn run(
        &self,
        program: &str,
        args: &[&str],
    ) -> Result<Output, DevDbError> {
        let output =
            self.command(program).args(args).output().map_err(|e| {
                DevDbError::Io {
                    what: "cannot run",
                    path: self.bin.join(program),
                    source: e,
                }
            })?;
        if !output.status.success() {
            return Err(DevDbError::Command {
                program: program.to_owned(),
                status: output.status.to_string(),
                output: tail(&format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )),
            });
        }
        Ok(output)
    }

    /// Gives a directory we created to the server's user.
    pub(crate) fn hand_over(&self, dir: &Utf8Path) -> Result<(), DevDbError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(
                |e| DevDbError::Io {
                    what: "cannot give the directory to postgres",
                    path: dir.to_owned(),
                    source: e,
                },
            )?;
        }
        Ok(())
    }

    /// The major version, for naming caches (`"15"`).
    pub fn version(&self) -> String {
        self.bin
            .parent()
            .and_then(|p| p.file_name())
            .unwrap_or("unknown")
            .to_owned()
    }
}

fn candidates() -> Vec<Utf8PathBuf> {
    let mut out = Vec::new();
    if let Ok(dir) = std::env::var("BATON_PG_BIN") {
        out.push(Utf8PathBuf::from(dir));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, Utf8PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let version = name.parse().ok()?;
                Some((
                    version,
                    Utf8PathBuf::from(format!(
                        "/usr/lib/postgresql/{name}/bin"
                    )),
                ))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        out.extend(versions.into_iter().map(|(_, dir)| dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(
            std::env::split_paths(&path)
                .filter_map(|p| Utf8PathBuf::from_path_buf(p).ok()),
        );
    }
    out
}

/// True when running as root: the effective user, the one PostgreSQL
/// refuses to run as and the one allowed to switch users.
pub(crate) fn is_root() -> bool {
    geteuid().is_root()
}

/// The user the server runs as when we are root.
const SERVER_USER: &str = "postgres";

/// `(uid, gid)` of the server's user; an error naming the cause if the
/// system has none.
fn postgres_user() -> Result<(u32, u32), DevDbError> {
    user_ids(SERVER_USER)?.ok_or(DevDbError::NoPostgresUser)
}

/// `(uid, gid)` of `name` from the system's user database (`getpwnam_r`,
/// so `/etc/passwd` or whatever NSS is set up to consult).
fn user_ids(name: &str) -> Result<Option<(u32, u32)>, DevDbError> {
    let user =
        User::from_name(name).map_err(|errno| DevDbError::UserLookup {
            user: name.to_owned(),
            source: errno.into(),
        })?;
    Ok(user.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
}

/// The last few lines of some output, for error messages.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_by_name() {
        assert_eq!(user_ids("root").unwrap(), Some((0, 0)));
        assert_eq!(user_ids("baton-no-such-user").unwrap(), None);
    }
}
