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
  ci       everything CI checks: fmt, clippy, tidy, packaging of the
           published crates (without building them), rustdoc with
           warnings as errors, the tests, and one smoke run of each
           benchmark
  bench    run the criterion benchmarks and print one summary table
           (--quick: fewer samples, about two minutes once built)
  fmt      format the workspace
  clippy   lint the workspace, warnings as errors
  tidy     check workspace conventions (dependencies, lints, names,
           publishing metadata, the crate layering)
  test     run the tests (cargo nextest, ci profile), the doc-tests,
           and the mutant tests
  mutants  only the mutant tests, in a separate build with the
           test-only `mutants` features
  package-verify [ARGS]
           package every published crate and build each package as
           crates.io would (slow: a build per crate; not part of ci);
           ARGS go to cargo package, e.g. --allow-dirty
  soak [N] the long runs, N times longer than in CI (default 10): the
           model test, the stress test, the fault tests, the ledger
           handoff across processes and the mutated-document proptest,
           with their figures printed";

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
        Some("mutants") => mutants(),
        Some("package-verify") => package(true, &args[1..]),
        Some("soak") => soak(args.get(1).map(String::as_str)),
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
    step("package", || package(false, &[]))?;
    step("rustdoc", rustdoc)?;
    step("tests", test)?;
    step("benchmark smoke run", bench::smoke)
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("xtask ci: {name}");
    f().with_context(|| format!("step {name:?} failed"))
}

/// The packages with a test-only `mutants` feature: deliberate bugs the
/// tests must catch. Always built in an invocation of their own, so that
/// feature unification never puts a mutant into another build (the
/// `baton` binary the CLI tests run, say).
const MUTANTS: &str =
    "baton-datastore/mutants,baton-tests/mutants,baton-ledger/mutants";
const MUTANT_PACKAGES: [&str; 6] = [
    "-p",
    "baton-datastore",
    "-p",
    "baton-tests",
    "-p",
    "baton-ledger",
];

fn clippy() -> Result<()> {
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    let mut args = vec!["clippy", "--all-targets", "--locked"];
    args.extend(MUTANT_PACKAGES);
    args.extend(["--features", MUTANTS, "--", "-D", "warnings"]);
    cargo(&args)
}

/// `cargo package` for every published package (`--workspace` alone
/// would also package the `publish = false` ones). Without `verify`, it
/// checks the manifests, the file lists and that the packages resolve
/// against each other, without building them; with it, each package is
/// built from its `.crate` file, as crates.io users would.
fn package(verify: bool, extra: &[String]) -> Result<()> {
    let mut args = vec!["package", "--workspace", "--locked"];
    for name in tidy::NOT_PUBLISHED {
        args.extend(["--exclude", name]);
    }
    if !verify {
        args.push("--no-verify");
    }
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

/// The API docs of every crate, broken links and other rustdoc warnings
/// as errors.
fn rustdoc() -> Result<()> {
    cargo_with_env(
        &["doc", "--no-deps", "--workspace", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn test() -> Result<()> {
    cargo(&[
        "nextest",
        "run",
        "--workspace",
        "--locked",
        "--profile",
        "ci",
    ])?;
    // nextest does not run doc-tests.
    cargo(&["test", "--workspace", "--doc", "--locked"])?;
    mutants()
}

/// The mutant tests, in a build of their own (see [`MUTANTS`]).
fn mutants() -> Result<()> {
    let mut args = vec!["nextest", "run", "--locked", "--profile", "ci"];
    args.extend(MUTANT_PACKAGES);
    args.extend([
        "--features",
        MUTANTS,
        "-E",
        "test(mutant) | test(read_committed)",
    ]);
    cargo(&args)
}

fn soak(factor: Option<&str>) -> Result<()> {
    let factor = factor.unwrap_or("10");
    if factor.parse::<u32>().map_or(true, |n| n == 0) {
        bail!(
            "soak: the factor must be a whole number above 0, not {factor:?}"
        );
    }
    let status = Command::new(
        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
    )
    .args([
        "nextest",
        "run",
        "--workspace",
        "--locked",
        "--profile",
        "soak",
        "-E",
        "test(/^model::|^stress::|^faults::|^handoff::|mutated_documents/)",
    ])
    .env("BATON_SOAK", factor)
    .current_dir(tidy::workspace_root())
    .status()
    .context("cannot run cargo nextest")?;
    if !status.success() {
        bail!("the soak run failed ({status})");
    }
    Ok(())
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
    cargo_with_env(args, &[])
}

/// `cargo` with these environment variables set for it alone.
fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(tidy::workspace_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} exited with {status}", args.join(" "));
    }
    Ok(())
}
