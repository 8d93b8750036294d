//! Workspace conventions, checked from `cargo metadata` and the sources.
//!
//! What cargo metadata tells (members, names, versions, `publish`, each
//! dependency's kind, target, path and requirement, descriptions and
//! READMEs) is taken from it. It tells each value with the workspace's
//! inheritance already applied, though, and leaves out the root's
//! `[workspace.*]` tables, so those two facts are read from the
//! manifests' text ([`sections`]). The sources are read by a scanner that
//! only blanks comments and literals, which keeps xtask free of `syn`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The workspace root (this crate's parent directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// The packages that are never published: test scaffolding, the example
/// service, the cross-crate tests and the chores. Each says
/// `publish = false` itself. Every other package is published, and
/// carries the metadata and files crates.io shows.
pub(crate) const NOT_PUBLISHED: [&str; 4] =
    ["baton-test-utils", "baton-ledger", "baton-tests", "xtask"];

/// Crates of test scaffolding: only ever dev-dependencies, so that what
/// they pull in (proptest) stays out of every shipped crate.
const TEST_ONLY: [&str; 1] = ["baton-test-utils"];

/// The crate layering: for each package, the workspace crates (less
/// their `baton-` prefix) its normal and build dependencies and its
/// `src/` may name. Arrows only point down: uuid-kinds <- types <-
/// planner <- executor; types <- datastore <- executor <- nexus <-
/// rehearsal <- cli; dev-db stands alone and only the CLI uses it. Each
/// list holds everything below the package, not only its neighbours
/// (nexus may name the planner it reaches through the executor), so that
/// a new edge is a one-line change here that a reviewer sees. A package
/// the workspace lacks is no problem: baton-rehearsal is placed ahead of
/// its crate.
///
/// Dev-dependencies are not listed: tests may use any crate but test
/// scaffolding, which has its own rule ([`TEST_ONLY`]).
const LAYERS: [(&str, &str); 13] = [
    ("baton-uuid-kinds", ""),
    ("baton-types", "uuid-kinds"),
    ("baton-planner", "types uuid-kinds"),
    // The datastore decides no policy: no planner.
    ("baton-datastore", "types uuid-kinds"),
    ("baton-dev-db", ""),
    ("baton-executor", "datastore planner types uuid-kinds"),
    ("baton-nexus", "datastore executor planner types uuid-kinds"),
    // Rehearsals drive Nexus instances; the CLI runs them.
    (
        "baton-rehearsal",
        "datastore executor nexus planner types uuid-kinds",
    ),
    (
        "baton-cli",
        "datastore dev-db executor nexus planner rehearsal types uuid-kinds",
    ),
    // Test scaffolding may build on the shipped libraries up to the Nexus.
    (
        "baton-test-utils",
        "datastore dev-db executor nexus planner types uuid-kinds",
    ),
    // The example embeds Baton as a service would: through the Nexus
    // handle and the datastore's types, never the executor or planner.
    ("baton-ledger", "datastore nexus types uuid-kinds"),
    // The cross-crate tests use workspace crates as dev-dependencies
    // only; the chores use none.
    ("baton-tests", ""),
    ("xtask", ""),
];

/// The SQL driver's packages: the pool, diesel and the wire driver.
/// Among published packages only [`SPEAKS_SQL`] may have them as normal
/// dependencies; the others that need a diesel item (a service's query
/// on a `Claim`'s connection, say) take it from the re-export,
/// `baton_datastore::diesel`, so that the workspace has one diesel and
/// the datastore stays the one place that decides how SQL is sent. Test
/// scaffolding and the example are exempt, being unpublished.
///
/// This is checked in the manifests only, on purpose: a crate without
/// `diesel` among its dependencies can name `diesel::` only through the
/// re-export, the allowed way, which a scan of the sources would flag.
const SQL_DRIVER: [&str; 4] =
    ["bb8", "diesel", "diesel-async", "tokio-postgres"];

/// The one package that speaks SQL.
const SPEAKS_SQL: &str = "baton-datastore";

/// The workspace crates `package` may name, if the layering places it.
fn layer(package: &str) -> Option<Vec<String>> {
    let (_, below) = LAYERS.iter().find(|(name, _)| *name == package)?;
    Some(
        below
            .split_whitespace()
            .map(|n| format!("baton-{n}"))
            .collect(),
    )
}

/// "baton-types, baton-uuid-kinds", or words for an empty list.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        return "no workspace crate".to_owned();
    }
    names.join(", ")
}

/// The package a member folder must hold: `baton-<folder>`, except xtask,
/// which keeps the name cargo's alias expects.
fn package_name(member: &str) -> String {
    let folder = member.rsplit('/').next().unwrap_or(member);
    if member == "xtask" {
        folder.to_owned()
    } else {
        format!("baton-{folder}")
    }
}

/// `cargo metadata` for the workspace's own packages: `--no-deps`, as
/// tidy needs nothing resolved, and offline and locked, so that it never
/// fetches or changes anything.
fn metadata(root: &Path) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .args(["--locked", "--offline"])
        .current_dir(root)
        .output()
        .with_context(|| format!("cannot run {cargo} metadata"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("cargo metadata failed: {}", stderr.trim());
    }
    serde_json::from_slice(&output.stdout).context("unreadable metadata")
}

/// A string of cargo metadata's, "" for none (`null`).
fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// A manifest's `[section]`s and their lines, without comments and blank
/// lines. Only for what cargo metadata does not tell: the root's
/// `[workspace.*]` tables, and whether a member writes
/// `key.workspace = true`. The manifests keep a key or a dependency to a
/// line, so lines are enough, and xtask needs no TOML parser.
fn sections(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out = vec![("", vec![])];
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            out.push((line.trim_matches(['[', ']']), vec![]));
        } else if !line.is_empty() && !line.starts_with('#') {
            out.last_mut().expect("never empty").1.push(line);
        }
    }
    out
}

/// The lines of `[name]`, none if it is missing.
fn table<'a>(
    sections: &'a [(&str, Vec<&'a str>)],
    name: &str,
) -> &'a [&'a str] {
    let found = sections.iter().find(|(n, _)| *n == name);
    found.map_or(&[], |(_, lines)| lines)
}

/// The value of `key` among `lines`, as written (strings keep quotes).
fn value<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Every convention broken, one sentence each.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let metadata = metadata(root)?;
    let root = Path::new(text(&metadata, "workspace_root"));
    let packages = metadata["packages"].as_array().context("no packages")?;
    let mut problems = check_root(&read(&root.join("Cargo.toml"))?);
    problems.extend(check_path_versions(packages));
    let mut members: Vec<(String, &Value)> = packages
        .iter()
        .map(|package| {
            let dir = Path::new(text(package, "manifest_path")).parent();
            let dir = dir.and_then(|d| d.strip_prefix(root).ok());
            (dir.unwrap_or(root).display().to_string(), package)
        })
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    for (member, package) in members {
        let manifest = read(Path::new(text(package, "manifest_path")))?;
        problems.extend(check_member(&member, package, &manifest));
        problems.extend(check_files(root, &member));
        problems.extend(check_sources(root, &member)?);
    }
    Ok(problems)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The root manifest's `[workspace.*]` tables, which metadata leaves out.
fn check_root(root_text: &str) -> Vec<String> {
    let sections = sections(root_text);
    let has = |name: &str| sections.iter().any(|(n, _)| n.starts_with(name));
    let package = |key| value(table(&sections, "workspace.package"), key);
    let dependencies = table(&sections, "workspace.dependencies").iter();
    let sorted = dependencies.filter_map(|l| l.split([' ', '=']).next());
    [
        // Each package says whether it is published; a default would let
        // a new package be published, or not, without anyone deciding it.
        (
            package("publish").is_some(),
            "[workspace.package] must not set publish: each package says \
             it (publish = false, or nothing to be published)",
        ),
        (
            package("repository").is_none(),
            "[workspace.package] has no repository",
        ),
        (
            package("license").is_none(),
            "[workspace.package] has no license",
        ),
        (
            package("version").is_none(),
            "[workspace.package] has no version (the published packages' \
             version)",
        ),
        (
            !has("workspace.dependencies"),
            "no [workspace.dependencies] section",
        ),
        (
            !sorted.is_sorted(),
            "[workspace.dependencies] is not sorted by name",
        ),
        (!has("workspace.lints"), "no [workspace.lints] section"),
    ]
    .into_iter()
    .filter(|(broken, _)| *broken)
    .map(|(_, problem)| problem.to_owned())
    .collect()
}

/// `cargo package` needs a version on the path dependencies of a
/// published package, and the members take theirs from
/// `[workspace.dependencies]`, so each dependency on a published member
/// asks for its version. An unpublished one (test scaffolding) is only
/// a dev-dependency, which cargo drops from the package.
fn check_path_versions(packages: &[Value]) -> BTreeSet<String> {
    let version = |name: &str| {
        let found = packages.iter().find(|p| text(p, "name") == name);
        found.map(|p| text(p, "version"))
    };
    let dependencies = packages.iter().flat_map(dependencies);
    dependencies
        .filter(|d| !d["path"].is_null())
        .filter(|d| !NOT_PUBLISHED.contains(&text(d, "name")))
        .filter_map(|d| {
            let (name, version) = (text(d, "name"), version(text(d, "name"))?);
            (text(d, "req") != format!("^{version}")).then(|| {
                format!(
                    "[workspace.dependencies] {name} must say version = \
                     \"{version}\", the workspace version (cargo package \
                     needs it)"
                )
            })
        })
        .collect()
}

/// A package's dependencies in cargo metadata, of every kind.
fn dependencies(package: &Value) -> impl Iterator<Item = &Value> {
    package["dependencies"].as_array().into_iter().flatten()
}

/// The manifest section a dependency is declared in, for messages.
fn declared_in(dependency: &Value) -> String {
    let kind = match text(dependency, "kind") {
        "dev" => "dev-dependencies",
        "build" => "build-dependencies",
        _ => "dependencies",
    };
    match dependency["target"].as_str() {
        Some(target) => format!("target.'{target}'.{kind}"),
        None => kind.to_owned(),
    }
}

/// One member's name, inheritance, publishing metadata, place in the
/// layering and dependencies.
fn check_member(member: &str, package: &Value, manifest: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let sections = sections(manifest);
    let inherits = |key: &str| {
        let key = format!("{key}.workspace");
        value(table(&sections, "package"), &key) == Some("true")
    };
    let want = package_name(member);
    if text(package, "name") != want {
        problems.push(format!("the package must be named {want}"));
    }
    for key in ["edition", "rust-version"] {
        if !inherits(key) {
            problems.push(format!("{key}.workspace = true is missing"));
        }
    }
    // `publish = false` is the empty list of registries; null is no
    // `publish` at all (or `publish = true`, which is the same).
    let publish = &package["publish"];
    if NOT_PUBLISHED.contains(&want.as_str()) {
        if publish.as_array().is_none_or(|r| !r.is_empty()) {
            problems.push(format!(
                "{want} is never published, so it must say publish = false"
            ));
        }
        if text(package, "version") != "0.0.0" {
            problems
                .push("an unpublished package's version must be 0.0.0".into());
        }
    } else {
        if !publish.is_null() {
            problems.push(format!(
                "a published package says nothing about publish (only {} \
                 say publish = false)",
                NOT_PUBLISHED.join(", ")
            ));
        }
        for key in ["version", "license", "repository"] {
            if !inherits(key) {
                problems.push(format!(
                    "{key}.workspace = true is missing (a published package \
                     takes it from the workspace)"
                ));
            }
        }
        if text(package, "description").trim().is_empty() {
            problems.push("a published package needs a description".into());
        }
        if text(package, "readme") != "README.md" {
            problems.push(
                "a published package needs readme = \"README.md\"".into(),
            );
        }
    }
    let below = layer(&want);
    if below.is_none() {
        problems.push(format!(
            "{want} has no place in the crate layering: add it to LAYERS in \
             xtask/src/tidy.rs"
        ));
    }
    for dependency in dependencies(package) {
        let (name, section) =
            (text(dependency, "name"), declared_in(dependency));
        let shipped = text(dependency, "kind") != "dev";
        if TEST_ONLY.contains(&name) && shipped {
            problems.push(format!(
                "{name} is test scaffolding, only allowed in \
                 [dev-dependencies], not [{section}]"
            ));
        } else if let Some(below) = &below
            && shipped
            && name.starts_with("baton-")
            && !below.iter().any(|b| b == name)
        {
            problems.push(format!(
                "[{section}] has {name}, which is not below {want} in the \
                 crate layering ({want} may depend on {})",
                listed(below)
            ));
        }
        if shipped
            && SQL_DRIVER.contains(&name)
            && want != SPEAKS_SQL
            && !NOT_PUBLISHED.contains(&want.as_str())
        {
            problems.push(format!(
                "[{section}] has {name}, but only {SPEAKS_SQL} speaks SQL; \
                 use its re-export (baton_datastore::diesel, ::diesel_async)"
            ));
        }
    }
    for (section, declared) in own_versions(&sections) {
        problems.push(format!(
            "[{section}] `{declared}` must use `.workspace = true`"
        ));
    }
    if !table(&sections, "lints").contains(&"workspace = true") {
        problems.push("[lints] workspace = true is missing".to_owned());
    }
    problems
        .into_iter()
        .map(|p| format!("{member}: {p}"))
        .collect()
}

/// The dependencies a manifest declares with anything but
/// `workspace = true` (which metadata cannot tell from the same
/// requirement written out), with their sections: a line of
/// `[dependencies]`, or the whole of `[dependencies.foo]`, in any kind
/// of dependency section, `[target.'cfg(unix)'.dev-dependencies]` too.
fn own_versions<'a>(
    sections: &[(&'a str, Vec<&'a str>)],
) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for (name, lines) in sections {
        let parts: Vec<&str> = name.split('.').collect();
        let kind = parts.iter().position(|p| p.ends_with("dependencies"));
        let Some(at) = kind.filter(|&at| at == 0 || parts[0] == "target")
        else {
            continue;
        };
        let own = |l: &&&str| !l.contains("workspace = true");
        if at + 1 == parts.len() {
            out.extend(
                lines.iter().filter(own).map(|l| (*name, l.to_string())),
            );
        } else if lines.iter().all(|l| own(&l)) {
            out.push((*name, lines.join(", ")));
        }
    }
    out
}

/// A published package's folder holds its README and its licence text.
fn check_files(root: &Path, member: &str) -> Vec<String> {
    if NOT_PUBLISHED.contains(&package_name(member).as_str()) {
        return vec![];
    }
    ["README.md", "LICENSE"]
        .into_iter()
        .filter(|file| !root.join(member).join(file).is_file())
        .map(|file| {
            format!("{member}: a published package needs {member}/{file}")
        })
        .collect()
}

/// A crate's `src/` names only the workspace crates below it: a `use
/// baton_nexus::...` in the planner is reported even when a dependency
/// was added to make it compile. Code under `#[cfg(test)]` is held to
/// the same rule; tests that need more belong in the crate's `tests/`.
///
/// And no module imports, through `crate::`, a module that (directly or
/// further on) imports it back: the layering inside a crate points one
/// way too. A module is a file `src/x.rs` or a folder `src/x/`; the
/// crate root declares them all and is left out, as are names that are
/// not modules (`crate::Error`).
fn check_sources(root: &Path, member: &str) -> Result<Vec<String>> {
    let package = package_name(member);
    let below = layer(&package);
    let src = root.join(member).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    files.sort();
    let modules: BTreeSet<String> =
        files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let code = code_only(&read(file)?);
        let shown = file.strip_prefix(root).unwrap_or(file).display();
        let mut reported = BTreeSet::new();
        for (line, ident) in identifiers(&code) {
            let Some(below) = &below else { break };
            let Some(&(named, _)) =
                LAYERS.iter().find(|(n, _)| n.replace('-', "_") == ident)
            else {
                continue;
            };
            if named == package
                || below.iter().any(|b| b == named)
                || !reported.insert(named)
            {
                continue;
            }
            problems.push(format!(
                "{shown}:{line}: names {ident}, but {named} is not below \
                 {package} in the crate layering ({package} may name {})",
                listed(below)
            ));
        }
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        for named in crate_paths(&code) {
            if named != from && modules.contains(named) {
                let to = imports.entry(from.clone()).or_default();
                to.insert(named.to_owned());
            }
        }
    }
    for (from, to) in &imports {
        for next in to {
            let path = path_between(&imports, next, from, &mut BTreeSet::new());
            // Each loop is reported once, from its smallest module.
            if let Some(path) = path
                && path.iter().all(|m| *m >= from.as_str())
            {
                let chain: Vec<_> = std::iter::once(from.as_str())
                    .chain(path)
                    .map(|m| format!("{member}/src/{m}"))
                    .collect();
                problems.push(format!(
                    "a module imports one that imports it back: {}",
                    chain.join(" -> ")
                ));
            }
        }
    }
    Ok(problems)
}

/// The modules named right after `crate::` in code (see [`code_only`]),
/// a `crate::{a, b::c}` group giving each of its members.
fn crate_paths(code: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate") {
        let rest = code[at + "crate".len()..].trim_start();
        let Some(rest) = rest.strip_prefix("::").map(str::trim_start) else {
            continue;
        };
        if code[..at].ends_with(is_ident) {
            continue;
        }
        let Some(group) = rest.strip_prefix('{') else {
            out.push(leading(rest));
            continue;
        };
        out.push(leading(group));
        let mut depth = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => out.push(leading(&group[i + 1..])),
                _ => {}
            }
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// The module `file` belongs to: `src/x.rs` and `src/x/...` to `x`; none
/// for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The identifier `s` starts with, after any white space.
fn leading(s: &str) -> &str {
    let s = s.trim_start();
    &s[..s.find(|c| !is_ident(c)).unwrap_or(s.len())]
}

/// A chain of imports from `start` to `goal` (ending with `goal`), if
/// there is one that avoids the modules `seen`.
fn path_between<'a>(
    imports: &'a BTreeMap<String, BTreeSet<String>>,
    start: &'a str,
    goal: &str,
    seen: &mut BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    if start == goal {
        return Some(vec![start]);
    }
    if !seen.insert(start) {
        return None;
    }
    imports.get(start)?.iter().find_map(|next| {
        let mut path = path_between(imports, next, goal, seen)?;
        path.insert(0, start);
        Some(path)
    })
}

/// Every `.rs` file under `dir`, which need not exist.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `source` with its comments, string and character literals, lifetimes
/// and the `r#` of raw identifiers blanked out, lines kept, so that what
/// is left is code: a crate named in a doc comment (a doc-test, built
/// with the dev-dependencies) or in SQL (`baton_schema_version`) is no
/// import.
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(c) = rest.chars().next() {
        let (noise, code) =
            rest.split_at(noise(rest, !out.ends_with(is_ident)));
        out.extend(noise.chars().map(|c| if c == '\n' { c } else { ' ' }));
        if noise.is_empty() {
            out.push(c);
            rest = &code[c.len_utf8()..];
        } else {
            rest = code;
        }
    }
    out
}

/// How long the comment, literal, lifetime or raw identifier's `r#` that
/// `s` starts with is; 0 for code. `word`: `s` starts a word.
fn noise(s: &str, word: bool) -> usize {
    let b = s.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    // Just past the first `end` from `from` on.
    let past = |from: usize, end: &str| {
        let found = s.get(from..).and_then(|rest| rest.find(end));
        found.map_or(s.len(), |i| from + i + end.len())
    };
    // A raw string's prefix (r, br, cr) and its `#`s, if it is one.
    let prefix = match (at(0), at(1)) {
        (b'r', _) => 1,
        (b'b' | b'c', b'r') => 2,
        _ => 0,
    };
    let hashes = b[prefix..].iter().take_while(|&&c| c == b'#').count();
    match at(0) {
        b'/' if at(1) == b'/' => s.find('\n').unwrap_or(s.len()),
        b'/' if at(1) == b'*' => {
            let (mut depth, mut i) = (0, 0);
            while i < b.len() {
                let two = &b[i..b.len().min(i + 2)];
                depth += i32::from(two == b"/*") - i32::from(two == b"*/");
                i += if two == b"/*" || two == b"*/" { 2 } else { 1 };
                if depth == 0 {
                    break;
                }
            }
            i
        }
        _ if word && prefix > 0 && at(prefix + hashes) == b'"' => {
            past(prefix + hashes + 1, &format!("\"{}", "#".repeat(hashes)))
        }
        b'r' if word && hashes == 1 && s[2..].starts_with(is_ident) => 2,
        b'"' => {
            let mut escaped = false;
            let end = s[1..].find(|c| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            });
            end.map_or(s.len(), |i| i + 2)
        }
        // An escaped character: '\n', '\'', '\u{1F600}'.
        b'\'' if at(1) == b'\\' => past(3, "'"),
        b'\'' => match s[1..].chars().next() {
            Some(c) if at(1 + c.len_utf8()) == b'\'' => 2 + c.len_utf8(),
            // A lifetime or a label.
            _ => 1 + s[1..].find(|c| !is_ident(c)).unwrap_or(s.len() - 1),
        },
        _ => 0,
    }
}

/// The identifiers of code (see [`code_only`]), each with its line (from
/// 1); number literals are not identifiers.
fn identifiers(code: &str) -> impl Iterator<Item = (usize, &str)> {
    code.lines().zip(1..).flat_map(|(text, line)| {
        text.split(|c| !is_ident(c))
            .filter(|w| w.starts_with(|c: char| !c.is_ascii_digit()))
            .map(move |w| (line, w))
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn the_workspace_is_tidy() {
        let problems = check(&workspace_root()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// The manifest of a tidy package named `name`, with these normal
    /// dependencies.
    fn manifest(name: &str, deps: &[&str]) -> String {
        let mut text = format!("[package]\nname = \"{name}\"\n");
        if NOT_PUBLISHED.contains(&name) {
            text += "version = \"0.0.0\"\npublish = false\n";
        } else {
            text += "version.workspace = true\ndescription = \"A crate\"\n\
                     license.workspace = true\nrepository.workspace = true\n\
                     readme = \"README.md\"\n";
        }
        text += "edition.workspace = true\nrust-version.workspace = true\n\
                 [dependencies]\n";
        for dep in deps {
            text += &format!("{dep}.workspace = true\n");
        }
        text + "[lints]\nworkspace = true\n"
    }

    /// A workspace in a temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn write(&self, path: &str, text: &str) {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn check(&self) -> Vec<String> {
            check(&self.0).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A tidy workspace of these members (folder, normal dependencies,
    /// `src/lib.rs`), for a test to break, plus an empty member for each
    /// other workspace crate they depend on (cargo metadata wants them).
    /// Named after the test, so that tests running at once never share
    /// one.
    fn workspace(test: &str, members: &[(&str, &[&str], &str)]) -> Scratch {
        let dir = std::env::temp_dir()
            .join(format!("xtask-tidy-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let scratch = Scratch(dir);
        let mut members = members.to_vec();
        let mut deps: Vec<&str> = members
            .iter()
            .flat_map(|(_, deps, _)| *deps)
            .copied()
            .collect();
        deps.sort_unstable();
        deps.dedup();
        let mut root = String::from(
            "[workspace.package]\nversion = \"0.1.0\"\n\
             edition = \"2024\"\nrust-version = \"1.95.0\"\n\
             license = \"MPL-2.0\"\n\
             repository = \"https://example.invalid/baton\"\n\
             [workspace.dependencies]\n",
        );
        for dep in deps {
            let Some(folder) = dep.strip_prefix("baton-") else {
                root += &format!("{dep} = \"1\"\n");
                continue;
            };
            let folder: &str = format!("crates/{folder}").leak();
            if !members.iter().any(|(f, ..)| *f == folder) {
                members.push((folder, &[], ""));
            }
            let version = if NOT_PUBLISHED.contains(&dep) {
                ""
            } else {
                ", version = \"0.1.0\""
            };
            root += &format!("{dep} = {{ path = \"{folder}\"{version} }}\n");
        }
        let folders: Vec<_> = members.iter().map(|(f, ..)| *f).collect();
        root = format!(
            "[workspace]\nresolver = \"3\"\nmembers = {folders:?}\n{root}"
        );
        root += "[workspace.lints.rust]\nunsafe_code = \"forbid\"\n";
        scratch.write("Cargo.toml", &root);
        for (folder, deps, lib) in members {
            let name = package_name(folder);
            scratch
                .write(&format!("{folder}/Cargo.toml"), &manifest(&name, deps));
            scratch.write(&format!("{folder}/README.md"), "# A crate\n");
            scratch.write(&format!("{folder}/LICENSE"), "MPL-2.0\n");
            scratch.write(&format!("{folder}/src/lib.rs"), lib);
        }
        scratch
    }

    /// The problems of a workspace (named after the test) whose one
    /// member, in `folder`, has this manifest, its workspace dependencies
    /// among `deps`.
    fn member_problems(
        test: &str,
        folder: &str,
        deps: &[&str],
        text: &str,
    ) -> Vec<String> {
        let ws = workspace(test, &[(folder, deps, "")]);
        ws.write(&format!("{folder}/Cargo.toml"), text);
        ws.check()
    }

    const PLANNER: (&str, &[&str], &str) = (
        "crates/planner",
        &["baton-types", "thiserror"],
        "//! Decides; no I/O.\nuse baton_types::Blueprint;\n",
    );
    const NEXUS: (&str, &[&str], &str) = (
        "crates/nexus",
        &["baton-datastore", "baton-executor", "baton-planner"],
        "use baton_datastore::diesel;\nuse baton_planner::classify;\n",
    );
    const LEDGER: (&str, &[&str], &str) = (
        "examples/ledger",
        &["baton-nexus", "diesel"],
        "use baton_nexus::Nexus;\n",
    );

    #[test]
    fn a_fake_workspace_that_keeps_the_layering_is_tidy() {
        let ws = workspace("tidy", &[PLANNER, NEXUS, LEDGER]);
        assert_eq!(ws.check(), Vec::<String>::new());
    }

    #[test]
    fn tidy_catches_an_import_against_the_layering() {
        let lib = "//! Never `baton_nexus` here.\n\
                   use baton_types::Blueprint;\n\
                   use baton_nexus::Nexus;\n\
                   const A: &str = \"baton_executor\";\n\
                   use baton_nexus::NexusConfig;\n";
        let ws = workspace(
            "import",
            &[("crates/planner", &["baton-types"], lib), NEXUS],
        );
        // In a module further down, as a raw identifier.
        ws.write(
            "crates/planner/src/decide/mod.rs",
            "fn f() {\n    let _ = r#baton_executor::realize_blueprint;\n}\n",
        );
        assert_eq!(
            ws.check(),
            [
                "crates/planner/src/decide/mod.rs:2: names baton_executor, \
                 but baton-executor is not below baton-planner in the \
                 crate layering (baton-planner may name baton-types, \
                 baton-uuid-kinds)",
                "crates/planner/src/lib.rs:3: names baton_nexus, but \
                 baton-nexus is not below baton-planner in the crate \
                 layering (baton-planner may name baton-types, \
                 baton-uuid-kinds)",
            ],
        );
    }

    #[test]
    fn tidy_catches_a_module_that_imports_one_importing_it_back() {
        let ws = workspace(
            "module-loop",
            &[("crates/planner", &["baton-types"], "mod a;\nmod b;\n")],
        );
        // a -> b is fine alone; names that are not modules are ignored.
        ws.write(
            "crates/planner/src/a.rs",
            "use crate::{Error, b::{self, f}};\n// crate::c in a comment\n",
        );
        ws.write("crates/planner/src/b/mod.rs", "use crate::Error;\n");
        ws.write("crates/planner/src/c.rs", "const S: &str = \"crate::a\";\n");
        assert_eq!(ws.check(), Vec::<String>::new());
        // b's submodule names a back, through c: a loop of three.
        ws.write(
            "crates/planner/src/b/inner.rs",
            "fn g() { crate::c::h(); }\n",
        );
        ws.write("crates/planner/src/c.rs", "use crate::a::Thing;\n");
        assert_eq!(
            ws.check(),
            ["a module imports one that imports it back: \
                 crates/planner/src/a -> crates/planner/src/b -> \
                 crates/planner/src/c -> crates/planner/src/a"],
        );
    }

    #[test]
    fn tidy_catches_a_dependency_against_the_layering() {
        let ws = workspace(
            "edge",
            &[
                ("crates/planner", &["baton-datastore", "baton-types"], ""),
                ("crates/datastore", &["baton-planner"], ""),
            ],
        );
        let problems = ws.check();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        // The datastore decides no policy.
        assert!(
            problems[0].starts_with(
                "crates/datastore: [dependencies] has baton-planner"
            ),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with(
                "crates/planner: [dependencies] has baton-datastore, which \
                 is not below baton-planner"
            ),
            "{problems:#?}"
        );
    }

    #[test]
    fn tidy_keeps_the_sql_driver_in_the_datastore() {
        let ws = workspace(
            "diesel",
            &[
                ("crates/datastore", &["diesel", "diesel-async"], ""),
                ("crates/executor", &["baton-datastore", "diesel"], ""),
                ("crates/test-utils", &["diesel-async"], ""),
                LEDGER,
            ],
        );
        assert_eq!(
            ws.check(),
            ["crates/executor: [dependencies] has diesel, but only \
                 baton-datastore speaks SQL; use its re-export \
                 (baton_datastore::diesel, ::diesel_async)"]
        );
    }

    #[test]
    fn tidy_wants_every_package_in_the_layering() {
        let foo = manifest("baton-foo", &[]);
        let problems = member_problems("layering", "crates/foo", &[], &foo);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("LAYERS"), "{problems:#?}");
    }

    #[test]
    fn tidy_wants_a_published_package_complete() {
        let ws = workspace("files", &[PLANNER, LEDGER]);
        fs::remove_file(ws.0.join("crates/planner/LICENSE")).unwrap();
        // The example is unpublished: it needs neither.
        fs::remove_file(ws.0.join("examples/ledger/LICENSE")).unwrap();
        fs::remove_file(ws.0.join("examples/ledger/README.md")).unwrap();
        // Without a readme key cargo would take README.md; not so here.
        ws.write(
            "crates/planner/Cargo.toml",
            "[package]\nname = \"baton-planner\"\nversion = \"0.1.0\"\n\
             edition.workspace = true\nrust-version.workspace = true\n\
             license.workspace = true\ndescription = \"\"\n\
             readme = \"READ.ME\"\n[lints]\nworkspace = true\n",
        );
        assert_eq!(
            ws.check(),
            [
                "crates/planner: version.workspace = true is missing (a \
                 published package takes it from the workspace)",
                "crates/planner: repository.workspace = true is missing (a \
                 published package takes it from the workspace)",
                "crates/planner: a published package needs a description",
                "crates/planner: a published package needs readme = \
                 \"README.md\"",
                "crates/planner: a published package needs \
                 crates/planner/LICENSE",
            ]
        );
    }

    #[test]
    fn tidy_wants_publish_false_exactly_where_listed() {
        let published = manifest("baton-planner", &[])
            .replace("readme", "publish = false\nreadme");
        let problems =
            member_problems("published", "crates/planner", &[], &published);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("says nothing about publish"));

        let unpublished = manifest("baton-test-utils", &[])
            .replace("publish = false", "publish = true");
        let problems = member_problems(
            "unpublished",
            "crates/test-utils",
            &[],
            &unpublished,
        );
        assert_eq!(
            problems,
            [
                "crates/test-utils: baton-test-utils is never published, so \
                 it must say publish = false"
            ]
        );
    }

    #[test]
    fn tidy_checks_the_workspace_package_and_path_versions() {
        let root = "[workspace.package]\nversion = \"0.1.0\"\n\
                    license = \"MPL-2.0\"\npublish = false\n\
                    [workspace.dependencies]\n\
                    baton-types = { path = \"crates/types\" }\n\
                    [workspace.lints.rust]\nunsafe_code = \"forbid\"\n";
        let problems = check_root(root);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("must not set publish"));
        assert!(problems[1].contains("has no repository"));
        // The planner without a version, and test scaffolding (which
        // needs none) as a dev-dependency.
        let ws = workspace("paths", &[NEXUS, ("crates/test-utils", &[], "")]);
        let root = fs::read_to_string(ws.0.join("Cargo.toml")).unwrap();
        let root = root.replace(
            "\"crates/planner\", version = \"0.1.0\" }",
            "\"crates/planner\" }\n\
             baton-test-utils = { path = \"crates/test-utils\" }",
        );
        ws.write("Cargo.toml", &root);
        let nexus = manifest("baton-nexus", NEXUS.1)
            + "[dev-dependencies]\nbaton-test-utils.workspace = true\n";
        ws.write("crates/nexus/Cargo.toml", &nexus);
        assert_eq!(
            ws.check(),
            ["[workspace.dependencies] baton-planner must say version = \
              \"0.1.0\", the workspace version (cargo package needs it)"]
        );
    }

    #[test]
    fn tidy_catches_a_local_version_and_missing_lints() {
        let manifest = "[package]\nname = \"baton-types\"\n\
                        version = \"0.1.0\"\ndescription = \"Types\"\n\
                        edition.workspace = true\n\
                        rust-version.workspace = true\n\
                        license.workspace = true\n\
                        repository.workspace = true\n\
                        readme = \"README.md\"\n\
                        [dependencies]\nserde = \"1\"\n";
        let problems = member_problems("local", "crates/types", &[], manifest);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("version.workspace"));
        assert!(problems[1].contains("serde"));
        assert!(problems[2].contains("[lints]"));
    }

    #[test]
    fn tidy_keeps_test_scaffolding_in_dev_dependencies() {
        let deps = ["baton-test-utils"];
        let manifest = manifest("baton-types", &deps)
            + "[dev-dependencies]\nbaton-test-utils.workspace = true\n\
               [target.'cfg(unix)'.dependencies.baton-test-utils]\n\
               workspace = true\n";
        let problems =
            member_problems("scaffolding", "crates/types", &deps, &manifest);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("[dependencies]"), "{problems:#?}");
        assert!(problems[1].contains("[target."), "{problems:#?}");
    }

    #[test]
    fn tidy_catches_a_misnamed_package() {
        let manifest = manifest("foo", &[]);
        let problems =
            member_problems("misnamed", "crates/types", &[], &manifest);
        assert_eq!(
            problems,
            ["crates/types: the package must be named baton-types"]
        );
    }

    #[test]
    fn the_lexer_sees_code_only() {
        let source = "use a::b; // c\n/* d /* e */ f */ g\n\
                      let h = \"i \\\" j\";\nlet k = r#\"l \" m\"#;\n\
                      fn n<'o>(p: &'o str) -> char { 'q' }\n\
                      let r = ['\\'', '\\u{1F600}', 'é', b's'];\n\
                      let t = 1u8 + r#u;\n";
        let code = code_only(source);
        let found: Vec<_> = identifiers(&code)
            .filter(|(_, w)| !matches!(*w, "let" | "use" | "fn" | "str"))
            .collect();
        assert_eq!(
            found,
            [
                (1, "a"),
                (1, "b"),
                (2, "g"),
                (3, "h"),
                (4, "k"),
                (5, "n"),
                (5, "p"),
                (5, "char"),
                (6, "r"),
                (6, "b"),
                (7, "t"),
                (7, "u"),
            ]
        );
    }
}
