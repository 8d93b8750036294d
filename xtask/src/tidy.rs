//! Workspace conventions, checked from the manifests' text.
//!
//! The manifests are simple enough that a line reader is sufficient, which
//! keeps xtask free of a TOML parser.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The workspace root (this crate's parent directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
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

/// Crates of test scaffolding: only ever dev-dependencies, so that what
/// they pull in (proptest) stays out of every shipped crate.
const TEST_ONLY: [&str; 1] = ["baton-test-utils"];

fn is_dependency_section(name: &str) -> bool {
    name == "dependencies"
        || name == "dev-dependencies"
        || name == "build-dependencies"
        || (name.starts_with("target.") && name.ends_with("dependencies"))
}

/// Every convention broken, one sentence each.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
    };
    let root_text = read(&root.join("Cargo.toml"))?;
    let mut problems = Vec::new();
    let root_sections = sections(&root_text);
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
    } else {
        problems.push("no [workspace.dependencies] section".to_owned());
    }
    if !root_sections
        .iter()
        .any(|(n, _)| n.starts_with("workspace.lints"))
    {
        problems.push("no [workspace.lints] section".to_owned());
    }
    for member in members(&root_text) {
        let manifest = root.join(&member).join("Cargo.toml");
        let text = read(&manifest)?;
        problems.extend(check_member(&member, &text));
    }
    Ok(problems)
}

fn check_member(member: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let sections = sections(text);
    let folder = member.rsplit('/').next().unwrap_or(member);
    // Library crates and the top-level tests are `baton-*`; xtask keeps
    // the name cargo's alias expects.
    let want_name = if member == "xtask" {
        folder.to_owned()
    } else {
        format!("baton-{folder}")
    };
    let package = sections.iter().find(|(n, _)| n == "package");
    let field = |key: &str| {
        package.and_then(|(_, lines)| {
            lines.iter().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
        })
    };
    if field("name") != Some(format!("\"{want_name}\"")) {
        problems
            .push(format!("{member}: the package must be named {want_name}"));
    }
    if field("version").as_deref() != Some("\"0.0.0\"") {
        problems.push(format!("{member}: internal version must be 0.0.0"));
    }
    if field("edition.workspace").as_deref() != Some("true") {
        problems.push(format!("{member}: edition.workspace = true is missing"));
    }
    // A crate that must never be published (test scaffolding) says so
    // itself rather than rely on the workspace default.
    if field("publish.workspace").as_deref() != Some("true")
        && field("publish").as_deref() != Some("false")
    {
        problems.push(format!(
            "{member}: publish.workspace = true (or publish = false) is \
             missing"
        ));
    }
    for (name, lines) in &sections {
        if !is_dependency_section(name) {
            continue;
        }
        for line in lines {
            let dep = line.split(['.', ' ', '=']).next().unwrap_or("");
            if TEST_ONLY.contains(&dep) && name != "dev-dependencies" {
                problems.push(format!(
                    "{member}: {dep} is test scaffolding, only allowed in \
                     [dev-dependencies], not [{name}]"
                ));
            }
            let uses_workspace = line.contains(".workspace = true")
                || line.contains("workspace = true");
            if !uses_workspace {
                problems.push(format!(
                    "{member}: [{name}] `{line}` must use `.workspace = true`"
                ));
            }
        }
    }
    let lints = sections.iter().find(|(n, _)| n == "lints");
    if !lints.is_some_and(|(_, l)| l.iter().any(|l| l == "workspace = true")) {
        problems.push(format!("{member}: [lints] workspace = true is missing"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_is_tidy() {
        let problems = check(&workspace_root()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn tidy_catches_a_local_version_and_missing_lints() {
        let manifest = "[package]\nname = \"baton-foo\"\nversion = \"0.1.0\"\n\
                        edition.workspace = true\npublish.workspace = true\n\
                        [dependencies]\nserde = \"1\"\n";
        let problems = check_member("crates/foo", manifest);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("0.0.0"));
        assert!(problems[1].contains("serde"));
        assert!(problems[2].contains("[lints]"));
    }

    #[test]
    fn tidy_keeps_test_scaffolding_in_dev_dependencies() {
        let manifest = "[package]\nname = \"baton-foo\"\nversion = \"0.0.0\"\n\
                        edition.workspace = true\npublish = false\n\
                        [dependencies]\nbaton-test-utils.workspace = true\n\
                        [dev-dependencies]\nbaton-test-utils.workspace = true\n\
                        [lints]\nworkspace = true\n";
        let problems = check_member("crates/foo", manifest);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("[dependencies]"), "{problems:#?}");
    }

    #[test]
    fn tidy_wants_publish_from_the_workspace_or_false() {
        let manifest = "[package]\nname = \"baton-foo\"\nversion = \"0.0.0\"\n\
                        edition.workspace = true\npublish = true\n\
                        [lints]\nworkspace = true\n";
        let problems = check_member("crates/foo", manifest);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("publish"), "{problems:#?}");
    }

    #[test]
    fn tidy_catches_a_misnamed_package() {
        let manifest = "[package]\nname = \"foo\"\nversion = \"0.0.0\"\n\
                        edition.workspace = true\npublish.workspace = true\n\
                        [lints]\nworkspace = true\n";
        let problems = check_member("crates/foo", manifest);
        assert_eq!(
            problems,
            ["crates/foo: the package must be named baton-foo"]
        );
    }
}
