//! Developer chores for the Baton workspace: `cargo xtask <command>`.
//!
//! Kept to two small dependencies so that it builds in seconds; the work
//! is done by the cargo subcommands it runs.

mod bench;
mod tidy;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci       everything CI checks: fmt, clippy, tidy, the tests, and one
           smoke run of each benchmark
  bench    run the criterion benchmarks and print one summary table
           (--quick: fewer samples, about two minutes once built)
  fmt      format the workspace
  clippy   lint the workspace, warnings as errors
  tidy     check workspace conventions (dependencies, lints, names)
  test     run the tests (cargo nextest, ci profile)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("fmt") => cargo(&["fmt", "--all"]),
        Some("clippy") => clippy(),
        Some("tidy") => tidy(),
        Some("test") => test(),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn ci() -> Result<()> {
    step("fmt --check", || cargo(&["fmt", "--all", "--check"]))?;
    step("clippy", clippy)?;
    step("tidy", tidy)?;
    step("tests", test)?;
    step("benchmark smoke run", bench::smoke)
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("xtask ci: {name}");
    f().with_context(|| format!("step {name:?} failed"))
}

fn clippy() -> Result<()> {
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])
}

fn test() -> Result<()> {
    cargo(&[
        "nextest",
        "run",
        "--workspace",
        "--locked",
        "--profile",
        "ci",
    ])
}

fn tidy() -> Result<()> {
    let root = tidy::workspace_root();
    let problems = tidy::check(&root)?;
    if problems.is_empty() {
        eprintln!("tidy: the workspace follows its conventions");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("tidy: {problem}");
    }
    bail!("{} tidy problem(s)", problems.len())
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(tidy::workspace_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} exited with {status}", args.join(" "));
    }
    Ok(())
}
