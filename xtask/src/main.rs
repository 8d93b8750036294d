//! Developer chores for the Baton workspace: `cargo xtask <command>`.
//!
//! Kept to a few dependencies that the workspace builds anyway (anyhow,
//! clap with the workspace's features, serde_json), so that it costs
//! little more to build than its own code; the work is done by the cargo
//! subcommands it runs.

mod bench;
mod contention;
mod tidy;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};

/// Developer chores for the Baton workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    command: Option<Chore>,
}

#[derive(Debug, Subcommand)]
enum Chore {
    /// Every check CI runs: fmt, clippy, tidy, package, doc, tests.
    ///
    /// `cargo fmt --check`, clippy with warnings as errors, the tidy
    /// check, packaging of the published crates (without building them),
    /// rustdoc with warnings as errors, the tests (as `test`), and one
    /// smoke run of each benchmark.
    Ci,
    /// Run the benchmarks and print one summary table.
    Bench {
        /// Fewer samples: about two minutes once built.
        #[arg(long)]
        quick: bool,
    },
    /// Format the workspace.
    Fmt,
    /// Lint the workspace, warnings as errors.
    Clippy,
    /// Check the workspace's conventions and its crate layering.
    ///
    /// The dependencies, lints, package names, publishing metadata and
    /// the crate layering, from the manifests and the crates' `src/`.
    Tidy,
    /// The tests (nextest, ci profile), doc-tests and mutant tests.
    Test,
    /// Only the mutant tests, in a build of their own.
    ///
    /// Built with the test-only `mutants` features, in a cargo invocation
    /// that no other build shares.
    Mutants,
    /// Package the published crates and build each (slow; not in ci).
    ///
    /// Each package is built from its `.crate` file, as crates.io users
    /// would: a build per crate, so it is not part of `ci`, which packages
    /// without building.
    PackageVerify {
        /// Passed on to `cargo package`, e.g. --allow-dirty.
        #[arg(
            value_name = "ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        cargo_args: Vec<String>,
    },
    /// The long runs, N times longer than in CI, figures printed.
    ///
    /// The model test, the stress test, the fault tests, the ledger
    /// handoff across processes and the mutated-document proptest.
    Soak {
        /// How many times longer than in CI.
        #[arg(
            value_name = "N",
            default_value_t = 10,
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        factor: u32,
    },
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            // Help to stdout with status 0; usage errors to stderr with
            // status 2, as for `baton`.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    match run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(chore: Option<Chore>) -> Result<()> {
    match chore {
        Some(Chore::Ci) => ci(),
        Some(Chore::Bench { quick }) => bench::run(quick),
        Some(Chore::Fmt) => cargo(&["fmt", "--all"]),
        Some(Chore::Clippy) => clippy(),
        Some(Chore::Tidy) => tidy(),
        Some(Chore::Test) => test(),
        Some(Chore::Mutants) => mutants(),
        Some(Chore::PackageVerify { cargo_args }) => package(true, &cargo_args),
        Some(Chore::Soak { factor }) => soak(factor),
        // `cargo xtask` alone lists the chores.
        None => Ok(Args::command().print_help()?),
    }
}

fn ci() -> Result<()> {
    nextest_is_there()?;
    let started = std::time::Instant::now();
    let mut times = Vec::new();
    let steps: [(&str, Step); 7] = [
        ("fmt --check", || cargo(&["fmt", "--all", "--check"])),
        ("clippy", clippy),
        ("tidy", tidy),
        ("package", || package(false, &[])),
        ("rustdoc", rustdoc),
        ("tests", test),
        ("benchmark smoke run", bench::smoke),
    ];
    for (name, f) in steps {
        let at = std::time::Instant::now();
        let done = step(name, f);
        times.push(format!("{name} {:.0} s", at.elapsed().as_secs_f64()));
        if let Err(e) = done {
            eprintln!(
                "xtask ci: FAILED at {name} after {:.0} s ({})",
                started.elapsed().as_secs_f64(),
                times.join(", ")
            );
            return Err(e);
        }
    }
    eprintln!(
        "xtask ci: every check passed in {:.0} s ({})",
        started.elapsed().as_secs_f64(),
        times.join(", ")
    );
    Ok(())
}

/// One step of `cargo xtask ci`.
type Step = fn() -> Result<()>;

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("xtask ci: {name}");
    f().with_context(|| format!("step {name:?} failed"))
}

/// The tests run under cargo-nextest: say so at once, not after the
/// build, if it is missing.
fn nextest_is_there() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let there = Command::new(cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !there {
        bail!(
            "cargo-nextest is not installed, and the tests run under it: \
             install it with `cargo install cargo-nextest --locked`, then \
             run `cargo xtask ci` again"
        );
    }
    Ok(())
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

fn soak(factor: u32) -> Result<()> {
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
        "test(/^model::|^exhaustive::|^stress::|^faults::|^failover::|^handoff::|^ha_faults::|mutated_documents/)",
    ])
    .env("BATON_SOAK", factor.to_string())
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Args, Chore};

    fn parse(args: &[&str]) -> Result<Option<Chore>, clap::Error> {
        Args::try_parse_from(["cargo xtask"].iter().chain(args))
            .map(|a| a.command)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn package_verify_passes_its_flags_to_cargo() {
        let Ok(Some(Chore::PackageVerify { cargo_args })) =
            parse(&["package-verify", "--allow-dirty", "--no-metadata"])
        else {
            panic!("not parsed");
        };
        assert_eq!(cargo_args, ["--allow-dirty", "--no-metadata"]);
    }

    #[test]
    fn soak_takes_a_factor_above_zero() {
        assert!(matches!(
            parse(&["soak"]),
            Ok(Some(Chore::Soak { factor: 10 }))
        ));
        assert!(matches!(
            parse(&["soak", "3"]),
            Ok(Some(Chore::Soak { factor: 3 }))
        ));
        assert!(parse(&["soak", "0"]).is_err());
        assert!(parse(&["soak", "ten"]).is_err());
    }

    #[test]
    fn bench_takes_only_quick() {
        assert!(matches!(
            parse(&["bench", "--quick"]),
            Ok(Some(Chore::Bench { quick: true }))
        ));
        assert!(parse(&["bench", "--slow"]).is_err());
        assert!(matches!(parse(&[]), Ok(None)));
    }
}
