//! Workspace conventions, checked from the manifests' and sources' text.
//!
//! The manifests are simple enough that a line reader is sufficient, which
//! keeps xtask free of a TOML parser; the sources are read by a small
//! lexer that only has to tell code from comments and literals, which
//! keeps it free of `syn`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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

/// The crate layering: for each package, the workspace crates its normal
/// (non-dev) dependencies and its `src/` may name. Arrows only point
/// down: uuid-kinds <- types <- planner <- executor; types <- datastore
/// <- executor <- nexus <- cli; dev-db stands alone and only the CLI
/// uses it. Each list holds everything below the package, not only its
/// direct neighbours (nexus may name the planner it reaches through the
/// executor), so a new edge is a one-line change here that a reviewer
/// sees.
///
/// Dev-dependencies are not listed: tests may use any crate but test
/// scaffolding, which has its own rule ([`TEST_ONLY`]).
const LAYERS: [(&str, &[&str]); 13] = [
    ("baton-uuid-kinds", &[]),
    ("baton-types", &["baton-uuid-kinds"]),
    ("baton-planner", &["baton-types", "baton-uuid-kinds"]),
    // The datastore decides no policy: no planner.
    ("baton-datastore", &["baton-types", "baton-uuid-kinds"]),
    ("baton-dev-db", &[]),
    (
        "baton-executor",
        &[
            "baton-datastore",
            "baton-planner",
            "baton-types",
            "baton-uuid-kinds",
        ],
    ),
    (
        "baton-nexus",
        &[
            "baton-datastore",
            "baton-executor",
            "baton-planner",
            "baton-types",
            "baton-uuid-kinds",
        ],
    ),
    (
        "baton-rehearsal",
        &[
            "baton-datastore",
            "baton-executor",
            "baton-nexus",
            "baton-planner",
            "baton-types",
            "baton-uuid-kinds",
        ],
    ),
    (
        "baton-cli",
        &[
            "baton-datastore",
            "baton-dev-db",
            "baton-executor",
            "baton-nexus",
            "baton-planner",
            "baton-rehearsal",
            "baton-types",
            "baton-uuid-kinds",
        ],
    ),
    // Test scaffolding may build on anything shipped but the binary.
    (
        "baton-test-utils",
        &[
            "baton-datastore",
            "baton-dev-db",
            "baton-executor",
            "baton-nexus",
            "baton-planner",
            "baton-types",
            "baton-uuid-kinds",
        ],
    ),
    // The example embeds Baton as a service would: through the Nexus
    // handle and the datastore's types, never the executor or planner.
    (
        "baton-ledger",
        &[
            "baton-datastore",
            "baton-nexus",
            "baton-rehearsal",
            "baton-types",
            "baton-uuid-kinds",
        ],
    ),
    // The cross-crate tests use workspace crates as dev-dependencies
    // only; the chores use none.
    ("baton-tests", &[]),
    ("xtask", &[]),
];

/// The SQL driver's packages. Among published packages only
/// [`SPEAKS_SQL`] may have them as normal dependencies; the others that
/// need a diesel item (a service's query on a `Claim`'s connection, say)
/// take it from the re-export, `baton_datastore::diesel`, so that the
/// workspace has one diesel and the datastore stays the one place that
/// decides how SQL is sent. Test scaffolding and the example are exempt,
/// being unpublished.
///
/// This is checked in the manifests only, on purpose. A crate without
/// `diesel` among its dependencies cannot name `diesel::` at all unless
/// it imported the re-export (`use baton_datastore::diesel;`), which is
/// the allowed way; a scan of the sources for `diesel::` would flag
/// exactly that allowed use. So the compiler's name resolution plus this
/// manifest rule is the precise check, and the source scan looks only
/// for `baton_*` crate names.
/// The pool (`bb8`) and the wire driver (`tokio-postgres`) belong to it too.
const SQL_DRIVER: [&str; 4] =
    ["bb8", "diesel", "diesel-async", "tokio-postgres"];

/// The one package that speaks SQL.
const SPEAKS_SQL: &str = "baton-datastore";

/// The workspace crates `package` may name, if the layering places it.
fn layer(package: &str) -> Option<&'static [&'static str]> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == package)
        .map(|(_, below)| *below)
}

/// "baton-types, baton-uuid-kinds", or words for an empty list.
fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "no workspace crate".to_owned()
    } else {
        names.join(", ")
    }
}

/// A manifest split into `[section]` -> lines.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![(String::new(), vec![])];
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            out.push((line.trim_matches(['[', ']']).to_owned(), vec![]));
        } else if !line.is_empty() && !line.starts_with('#') {
            out.last_mut().expect("never empty").1.push(line.to_owned());
        }
    }
    out
}

/// The value of `key` in `[section]`, as written (strings keep quotes).
fn field(
    sections: &[(String, Vec<String>)],
    section: &str,
    key: &str,
) -> Option<String> {
    let (_, lines) = sections.iter().find(|(n, _)| n == section)?;
    lines.iter().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn members(root_manifest: &str) -> Vec<String> {
    let text = root_manifest;
    let start = text.find("members = [").map(|i| i + "members = [".len());
    let Some(start) = start else { return vec![] };
    let end = start + text[start..].find(']').unwrap_or(0);
    text[start..end]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
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

const DEPENDENCY_KINDS: [&str; 3] =
    ["dependencies", "dev-dependencies", "build-dependencies"];

/// For a dependency section, its kind and, for a table of its own
/// (`[dependencies.foo]`), the dependency it names: `[dependencies]`,
/// `[dev-dependencies.foo]`, `[target.'cfg(unix)'.build-dependencies]`.
fn dependency_section(name: &str) -> Option<(&str, Option<&str>)> {
    let parts: Vec<&str> = name.split('.').collect();
    let (at, dependency) = match parts.as_slice() {
        [.., kind, dep] if DEPENDENCY_KINDS.contains(kind) => {
            (parts.len() - 2, Some(*dep))
        }
        [.., kind] if DEPENDENCY_KINDS.contains(kind) => {
            (parts.len() - 1, None)
        }
        _ => return None,
    };
    (at == 0 || parts[0] == "target").then(|| (parts[at], dependency))
}

/// One dependency as a manifest declares it.
struct Dependency<'a> {
    /// The section it is in, as written between the brackets.
    section: &'a str,
    /// `dependencies`, `dev-dependencies` or `build-dependencies`.
    kind: &'a str,
    name: String,
    /// The declaration, for messages.
    text: String,
    uses_workspace: bool,
}

fn dependencies(sections: &[(String, Vec<String>)]) -> Vec<Dependency<'_>> {
    let mut out = Vec::new();
    for (section, lines) in sections {
        let Some((kind, table)) = dependency_section(section) else {
            continue;
        };
        if let Some(name) = table {
            out.push(Dependency {
                section,
                kind,
                name: name.to_owned(),
                text: lines.join(", "),
                uses_workspace: lines.iter().any(|l| l == "workspace = true"),
            });
            continue;
        }
        for line in lines {
            out.push(Dependency {
                section,
                kind,
                name: line
                    .split(['.', ' ', '='])
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                text: line.clone(),
                uses_workspace: line.contains(".workspace = true")
                    || line.contains("workspace = true"),
            });
        }
    }
    out
}

/// Every convention broken, one sentence each.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let root_text = read(&root.join("Cargo.toml"))?;
    let mut problems = check_root(&root_text);
    for member in members(&root_text) {
        let manifest = root.join(&member).join("Cargo.toml");
        let text = read(&manifest)?;
        problems.extend(check_member(&member, &text));
        problems.extend(check_files(root, &member));
        problems.extend(check_sources(root, &member)?);
        problems.extend(check_module_loops(root, &member)?);
    }
    Ok(problems)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn check_root(root_text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let root_sections = sections(root_text);
    let workspace_field =
        |key: &str| field(&root_sections, "workspace.package", key);
    // Each package says whether it is published; a default would let a
    // new package be published, or not, without anyone deciding it.
    if workspace_field("publish").is_some() {
        problems.push(
            "[workspace.package] must not set publish: each package says \
             it (publish = false, or nothing to be published)"
                .to_owned(),
        );
    }
    for key in ["repository", "license"] {
        if workspace_field(key).is_none() {
            problems.push(format!("[workspace.package] has no {key}"));
        }
    }
    let version = workspace_field("version");
    if version.is_none() {
        problems.push(
            "[workspace.package] has no version (the published \
             packages' version)"
                .to_owned(),
        );
    }
    if let Some((_, deps)) = root_sections
        .iter()
        .find(|(n, _)| n == "workspace.dependencies")
    {
        let names: Vec<&str> = deps
            .iter()
            .filter_map(|l| l.split([' ', '=']).next())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        if names != sorted {
            problems.push(
                "[workspace.dependencies] is not sorted by name".to_owned(),
            );
        }
        // `cargo package` needs a version on the path dependencies of a
        // published package; an unpublished one (test scaffolding) is
        // only a dev-dependency, which cargo drops from the package.
        for (name, line) in names.iter().zip(deps) {
            let Some(version) = &version else { break };
            if line.contains("path =")
                && !NOT_PUBLISHED.contains(name)
                && !line.contains(&format!("version = {version}"))
            {
                problems.push(format!(
                    "[workspace.dependencies] {name} must say version = \
                     {version}, the workspace version (cargo package \
                     needs it)"
                ));
            }
        }
    } else {
        problems.push("no [workspace.dependencies] section".to_owned());
    }
    if !root_sections
        .iter()
        .any(|(n, _)| n.starts_with("workspace.lints"))
    {
        problems.push("no [workspace.lints] section".to_owned());
    }
    problems
}

fn check_member(member: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let sections = sections(text);
    let want_name = package_name(member);
    let field = |key: &str| field(&sections, "package", key);
    let is_true = |key: &str| field(key).as_deref() == Some("true");
    if field("name") != Some(format!("\"{want_name}\"")) {
        problems
            .push(format!("{member}: the package must be named {want_name}"));
    }
    for key in ["edition", "rust-version"] {
        if !is_true(&format!("{key}.workspace")) {
            problems
                .push(format!("{member}: {key}.workspace = true is missing"));
        }
    }
    if NOT_PUBLISHED.contains(&want_name.as_str()) {
        if field("publish").as_deref() != Some("false") {
            problems.push(format!(
                "{member}: {want_name} is never published, so it must say \
                 publish = false"
            ));
        }
        if field("version").as_deref() != Some("\"0.0.0\"") {
            problems.push(format!(
                "{member}: an unpublished package's version must be 0.0.0"
            ));
        }
    } else {
        check_published(member, &field, &mut problems);
    }
    let below = layer(&want_name);
    if below.is_none() {
        problems.push(format!(
            "{member}: {want_name} has no place in the crate layering: add \
             it to LAYERS in xtask/src/tidy.rs"
        ));
    }
    for dep in dependencies(&sections) {
        let Dependency { section, name, .. } = &dep;
        let shipped = dep.kind != "dev-dependencies";
        if TEST_ONLY.contains(&name.as_str()) && shipped {
            problems.push(format!(
                "{member}: {name} is test scaffolding, only allowed in \
                 [dev-dependencies], not [{section}]"
            ));
        } else if let Some(below) = below
            && shipped
            && name.starts_with("baton-")
            && !below.contains(&name.as_str())
        {
            problems.push(format!(
                "{member}: [{section}] has {name}, which is not below \
                 {want_name} in the crate layering ({want_name} may \
                 depend on {})",
                listed(below)
            ));
        }
        if shipped
            && SQL_DRIVER.contains(&name.as_str())
            && want_name != SPEAKS_SQL
            && !NOT_PUBLISHED.contains(&want_name.as_str())
        {
            problems.push(format!(
                "{member}: [{section}] has {name}, but only {SPEAKS_SQL} \
                 speaks SQL; use its re-export (baton_datastore::diesel, \
                 ::diesel_async)"
            ));
        }
        if !dep.uses_workspace {
            problems.push(format!(
                "{member}: [{section}] `{}` must use `.workspace = true`",
                dep.text
            ));
        }
    }
    let lints = sections.iter().find(|(n, _)| n == "lints");
    if !lints.is_some_and(|(_, l)| l.iter().any(|l| l == "workspace = true")) {
        problems.push(format!("{member}: [lints] workspace = true is missing"));
    }
    problems
}

/// A published package states no `publish`, shares the workspace's
/// version, licence and repository, and has its own description and
/// README.
fn check_published(
    member: &str,
    field: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    if field("publish").is_some() || field("publish.workspace").is_some() {
        problems.push(format!(
            "{member}: a published package says nothing about publish (only \
             {} say publish = false)",
            NOT_PUBLISHED.join(", ")
        ));
    }
    for key in ["version", "license", "repository"] {
        if field(&format!("{key}.workspace")).as_deref() != Some("true") {
            problems.push(format!(
                "{member}: {key}.workspace = true is missing (a published \
                 package takes it from the workspace)"
            ));
        }
    }
    if field("description").is_none_or(|d| d.trim_matches('"').is_empty()) {
        problems
            .push(format!("{member}: a published package needs a description"));
    }
    if field("readme").as_deref() != Some("\"README.md\"") {
        problems.push(format!(
            "{member}: a published package needs readme = \"README.md\""
        ));
    }
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
/// was added to make it compile.
///
/// Comments are skipped, doc comments included: their examples are
/// doc-tests, built with the dev-dependencies. So are string literals
/// (SQL names tables `baton_schema_version`). Code under `#[cfg(test)]`
/// in `src/` is held to the same rule; tests that need more belong in
/// the crate's `tests/`.
fn check_sources(root: &Path, member: &str) -> Result<Vec<String>> {
    let package = package_name(member);
    let Some(below) = layer(&package) else {
        return Ok(vec![]);
    };
    let mut files = Vec::new();
    rust_files(&root.join(member).join("src"), &mut files)?;
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        let text = read(&file)?;
        let shown = file.strip_prefix(root).unwrap_or(&file).display();
        let mut reported: Vec<&str> = Vec::new();
        for (line, ident) in identifiers(&text) {
            let Some(named) = LAYERS
                .iter()
                .map(|(name, _)| *name)
                .find(|name| name.replace('-', "_") == ident)
            else {
                continue;
            };
            if named == package
                || below.contains(&named)
                || reported.contains(&named)
            {
                continue;
            }
            reported.push(named);
            problems.push(format!(
                "{shown}:{line}: names {ident}, but {named} is not below \
                 {package} in the crate layering ({package} may name {})",
                listed(below)
            ));
        }
    }
    Ok(problems)
}

/// No module of a crate imports, through `crate::`, a module that
/// (directly or further on) imports it back: the layering inside a
/// crate points one way too, as between crates. A module is a file
/// `src/x.rs` or a folder `src/x/`; the crate root (`lib.rs`,
/// `main.rs`) declares them all and is left out, as are names that are
/// not modules (`crate::Error`).
fn check_module_loops(root: &Path, member: &str) -> Result<Vec<String>> {
    let src = root.join(member).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    files.sort();
    let module_of = |file: &PathBuf| module_of(&src, file);
    let modules: BTreeSet<String> =
        files.iter().filter_map(module_of).collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let text = read(file)?;
        for named in crate_paths(&text) {
            if named != from && modules.contains(named) {
                imports
                    .entry(from.clone())
                    .or_default()
                    .insert(named.to_owned());
            }
        }
    }
    let shown = |m: &str| format!("{member}/src/{m}");
    let mut problems = Vec::new();
    for (from, to) in &imports {
        for next in to {
            if let Some(path) = path_between(&imports, next, from) {
                // Each loop is reported once, from its smallest module.
                if path.iter().all(|m| m.as_str() >= from.as_str()) {
                    let mut chain = vec![shown(from)];
                    chain.extend(path.iter().map(|m| shown(m)));
                    problems.push(format!(
                        "a module imports one that imports it back: {}",
                        chain.join(" -> ")
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// The modules named right after `crate::` in `source`'s code (not its
/// comments or strings), a `crate::{a, b::c}` group giving each of its
/// members.
fn crate_paths(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (_, ident) in identifiers(source) {
        if ident != "crate" {
            continue;
        }
        let offset = ident.as_ptr() as usize - source.as_ptr() as usize;
        let Some(rest) = source[offset + ident.len()..]
            .trim_start()
            .strip_prefix("::")
            .map(str::trim_start)
        else {
            continue;
        };
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0;
                let mut start = 0;
                for (i, b) in group.bytes().enumerate() {
                    match b {
                        b'{' => depth += 1,
                        b'}' if depth == 0 => {
                            out.push(leading(&group[start..i]));
                            break;
                        }
                        b'}' => depth -= 1,
                        b',' if depth == 0 => {
                            out.push(leading(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => out.push(leading(rest)),
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
    let end = s.bytes().position(|b| !is_ident(b)).unwrap_or(s.len());
    &s[..end]
}

/// A chain of imports from `start` to `goal` (ending with `goal`), if
/// there is one.
fn path_between(
    imports: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    goal: &str,
) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![start.to_owned()]];
    while let Some(path) = stack.pop() {
        let last = path.last().expect("paths are never empty");
        if last == goal {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in imports.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
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

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifiers of Rust source outside comments and string and
/// character literals, each with its line (from 1). Raw identifiers
/// (`r#foo`) count as `foo`; lifetimes and number literals are skipped.
/// Only ASCII identifiers are reported whole, which is all the crate
/// names are.
fn identifiers(source: &str) -> Vec<(usize, &str)> {
    let bytes = source.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips from `i` to just past `end`, counting lines.
    let skip_to = |i: &mut usize, line: &mut usize, end: &[u8]| {
        while *i < bytes.len() && !bytes[*i..].starts_with(end) {
            if bytes[*i] == b'\n' {
                *line += 1;
            }
            *i += 1;
        }
        *i += end.len();
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if at(i + 1) == b'/' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if at(i + 1) == b'*' => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(bytes[i] == b'\n');
                        i += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    line += usize::from(at(i) == b'\n');
                    i += 1;
                }
                i += 1;
            }
            b'\'' => {
                if at(i + 1) == b'\\' {
                    // An escaped character: '\n', '\'', '\u{1F600}'.
                    i += 3;
                    skip_to(&mut i, &mut line, b"'");
                } else if let Some(c) = source[i + 1..].chars().next()
                    && at(i + 1 + c.len_utf8()) == b'\''
                {
                    i += 2 + c.len_utf8();
                } else {
                    // A lifetime or a label.
                    i += 1;
                    while is_ident(at(i)) {
                        i += 1;
                    }
                }
            }
            b'0'..=b'9' => {
                while is_ident(at(i)) {
                    i += 1;
                }
            }
            _ if is_ident(b) => {
                let start = i;
                while is_ident(at(i)) {
                    i += 1;
                }
                let word = &source[start..i];
                let hashes =
                    bytes[i..].iter().take_while(|&&b| b == b'#').count();
                if matches!(word, "r" | "br" | "cr") && at(i + hashes) == b'"' {
                    // A raw string: up to `"` and as many `#`s.
                    i += hashes + 1;
                    let end = format!("\"{}", "#".repeat(hashes));
                    skip_to(&mut i, &mut line, end.as_bytes());
                } else if word == "r" && hashes == 1 && is_ident(at(i + 1)) {
                    let start = i + 1;
                    i = start;
                    while is_ident(at(i)) {
                        i += 1;
                    }
                    out.push((line, &source[start..i]));
                } else {
                    out.push((line, word));
                }
            }
            _ => i += 1,
        }
    }
    out
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
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A tidy workspace of these members (folder, normal dependencies,
    /// `src/lib.rs`), for a test to break. Named after the test, so that
    /// tests running at once never share one.
    fn workspace(test: &str, members: &[(&str, &[&str], &str)]) -> Scratch {
        let dir = std::env::temp_dir()
            .join(format!("xtask-tidy-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let scratch = Scratch(dir);
        let mut deps: Vec<&str> = members
            .iter()
            .flat_map(|(_, deps, _)| *deps)
            .copied()
            .collect();
        deps.sort_unstable();
        deps.dedup();
        let mut root = String::from("[workspace]\nmembers = [\n");
        for (folder, ..) in members {
            root += &format!("    \"{folder}\",\n");
        }
        root += "]\n[workspace.package]\nversion = \"0.1.0\"\n\
                 license = \"MPL-2.0\"\n\
                 repository = \"https://example.invalid/baton\"\n\
                 [workspace.dependencies]\n";
        for dep in deps {
            root += &match dep.strip_prefix("baton-") {
                Some(folder) => format!(
                    "{dep} = {{ path = \"crates/{folder}\", version = \
                     \"0.1.0\" }}\n"
                ),
                None => format!("{dep} = \"1\"\n"),
            };
        }
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
        assert_eq!(check(&ws.0).unwrap(), Vec::<String>::new());
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
        let problems = check(&ws.0).unwrap();
        assert_eq!(
            problems,
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
        assert_eq!(check(&ws.0).unwrap(), Vec::<String>::new());
        // b's submodule names a back, through c: a loop of three.
        ws.write(
            "crates/planner/src/b/inner.rs",
            "fn g() { crate::c::h(); }\n",
        );
        ws.write("crates/planner/src/c.rs", "use crate::a::Thing;\n");
        assert_eq!(
            check(&ws.0).unwrap(),
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
        let problems = check(&ws.0).unwrap();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "crates/planner: [dependencies] has baton-datastore, which \
                 is not below baton-planner"
            ),
            "{problems:#?}"
        );
        // The datastore decides no policy.
        assert!(
            problems[1].starts_with(
                "crates/datastore: [dependencies] has baton-planner"
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
        let problems = check(&ws.0).unwrap();
        assert_eq!(
            problems,
            ["crates/executor: [dependencies] has diesel, but only \
                 baton-datastore speaks SQL; use its re-export \
                 (baton_datastore::diesel, ::diesel_async)"]
        );
    }

    #[test]
    fn tidy_wants_every_package_in_the_layering() {
        let problems = check_member("crates/foo", &manifest("baton-foo", &[]));
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
        ws.write(
            "crates/planner/Cargo.toml",
            "[package]\nname = \"baton-planner\"\nversion = \"0.1.0\"\n\
             edition.workspace = true\nrust-version.workspace = true\n\
             license.workspace = true\ndescription = \"\"\n\
             [lints]\nworkspace = true\n",
        );
        let problems = check(&ws.0).unwrap();
        assert_eq!(
            problems,
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
        let problems = check_member("crates/planner", &published);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("says nothing about publish"));

        let unpublished = manifest("baton-test-utils", &[])
            .replace("publish = false", "publish.workspace = true");
        let problems = check_member("crates/test-utils", &unpublished);
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
                    baton-planner = { path = \"crates/planner\" }\n\
                    baton-test-utils = { path = \"crates/test-utils\" }\n\
                    baton-types = { path = \"crates/types\", version = \
                    \"0.1.0\" }\n\
                    [workspace.lints.rust]\nunsafe_code = \"forbid\"\n";
        let problems = check_root(root);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("must not set publish"));
        assert!(problems[1].contains("has no repository"));
        assert!(problems[2].contains("baton-planner must say version"));
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
        let problems = check_member("crates/types", manifest);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("version.workspace"));
        assert!(problems[1].contains("serde"));
        assert!(problems[2].contains("[lints]"));
    }

    #[test]
    fn tidy_keeps_test_scaffolding_in_dev_dependencies() {
        let manifest = manifest("baton-types", &["baton-test-utils"])
            + "[dev-dependencies]\nbaton-test-utils.workspace = true\n\
               [target.'cfg(unix)'.dependencies.baton-test-utils]\n\
               workspace = true\n";
        let problems = check_member("crates/types", &manifest);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("[dependencies]"), "{problems:#?}");
        assert!(problems[1].contains("[target."), "{problems:#?}");
    }

    #[test]
    fn tidy_catches_a_misnamed_package() {
        let manifest = manifest("foo", &[]);
        let problems = check_member("crates/types", &manifest);
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
        let found: Vec<_> = identifiers(source)
            .into_iter()
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
