//! The README's tour, run from the README's own text: every `$ ` line is
//! run as written (in a shell, from the workspace root, with `baton` on
//! the PATH) and must print exactly the lines that follow it, and exit
//! with the status a `(exit N)` line gives (else 0).

use std::path::Path;
use std::process::{Command, Stdio};

use baton_dev_db::PersistentDb;

/// One `$ ` line of the tour and what it must print.
#[derive(Debug)]
struct Step {
    command: String,
    output: Vec<String>,
    status: i32,
}

/// The first ```text block after the tour's heading.
fn tour(readme: &str) -> Vec<Step> {
    let section = readme
        .split_once("## A tour by hand")
        .expect("the README has a tour")
        .1;
    let block = section
        .split_once("```text\n")
        .expect("the tour has a text block")
        .1
        .split_once("```")
        .expect("the block ends")
        .0;
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_owned(),
                output: Vec::new(),
                status: 0,
            });
            continue;
        }
        let step = steps.last_mut().expect("the block starts with a command");
        match line
            .strip_prefix("(exit ")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            Some(code) => step.status = code.parse().unwrap(),
            None => step.output.push(line.to_owned()),
        }
    }
    steps
}

/// Stops the tour's database however the test ends.
struct Stop(PersistentDb);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = tour(&readme);
    assert!(steps.len() > 10, "the tour was not found whole: {steps:?}");

    // The README shows root's default data directory; the test uses a
    // directory of its own, and maps its path back when comparing.
    let temp = camino_tempfile::Utf8TempDir::new().unwrap();
    let data = temp.path().join("db");
    let _stop = Stop(PersistentDb::new(&data));
    let shown = "/var/lib/baton/db";
    let escaped = |p: &str| p.replace('/', "%2F");
    let bin = Path::new(env!("CARGO_BIN_EXE_baton")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // Assignments (`F=...`) carry over to the later steps, as in a shell.
    let mut assignments = String::new();
    for step in &steps {
        let is_assignment = step
            .command
            .split_once('=')
            .is_some_and(|(name, _)| name.chars().all(char::is_alphanumeric));
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{assignments}{}", step.command))
            .current_dir(&root)
            .env("PATH", &path)
            .env("BATON_DATA_DIR", &data)
            .env_remove("BATON_DATABASE_URL")
            .env_remove("BATON_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if is_assignment {
            assignments.push_str(&format!("{}; ", step.command));
        }
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .replace(&escaped(data.as_str()), &escaped(shown))
        .replace(data.as_str(), shown);
        let printed: Vec<&str> = printed.lines().collect();
        assert_eq!(
            printed, step.output,
            "`$ {}` printed something other than the README shows",
            step.command
        );
        assert_eq!(
            out.status.code(),
            Some(step.status),
            "`$ {}` exited otherwise than the README shows",
            step.command
        );
    }
}
