//! Reading a blueprint from a file or stdin, bounded, as bad input on
//! any error.

use std::io::Read;

use baton_types::{Blueprint, ReadError, parse_blueprint};
use camino::Utf8Path;

use crate::failure::Failure;

/// The largest blueprint document Baton reads, in bytes. A rack's
/// blueprint is well under a megabyte; the limit is there so that a
/// mistaken path (`/dev/zero`, a log file) is refused instead of read
/// until memory runs out.
pub(crate) const MAX_BLUEPRINT_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a blueprint file (or stdin for `-`). Only regular files are
/// opened: a device or a FIFO could block or never end.
pub(crate) fn read_blueprint(path: &Utf8Path) -> Result<Blueprint, Failure> {
    let text = if path == "-" {
        bounded(std::io::stdin().lock(), "stdin")?
    } else {
        let cannot = |e: std::io::Error| {
            Failure::bad_input(format!(
                "cannot read blueprint file {path}: {e}."
            ))
        };
        let meta = std::fs::metadata(path).map_err(cannot)?;
        if !meta.is_file() {
            return Err(Failure::bad_input(format!(
                "{path} is not a regular file; a blueprint is read from a \
                 file or from stdin (`-`)."
            )));
        }
        if meta.len() > MAX_BLUEPRINT_BYTES {
            return Err(too_big(path.as_str()));
        }
        bounded(std::fs::File::open(path).map_err(cannot)?, path.as_str())?
    };
    parse_blueprint(&text).map_err(|e| Failure::bad_input(describe(path, &e)))
}

/// Reads at most [`MAX_BLUEPRINT_BYTES`] of UTF-8 text from `source`.
fn bounded(source: impl Read, name: &str) -> Result<String, Failure> {
    let mut text = String::new();
    source
        .take(MAX_BLUEPRINT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            Failure::bad_input(format!(
                "cannot read a blueprint from {name}: {e}."
            ))
        })?;
    if text.len() as u64 > MAX_BLUEPRINT_BYTES {
        return Err(too_big(name));
    }
    Ok(text)
}

fn too_big(name: &str) -> Failure {
    Failure::bad_input(format!(
        "{name} is larger than {} MiB, the most a blueprint may be; is it \
         the right file?",
        MAX_BLUEPRINT_BYTES / (1024 * 1024)
    ))
}

/// One sentence per problem, so a reader sees every one.
fn describe(path: &Utf8Path, error: &ReadError) -> String {
    match error {
        ReadError::Malformed { .. } => format!("{path}: {error}."),
        ReadError::Invalid(invalid) => {
            let mut text = format!(
                "{path}: blueprint {} is invalid ({} problem{}):",
                invalid.blueprint_id,
                invalid.problems.len(),
                if invalid.problems.len() == 1 { "" } else { "s" },
            );
            for problem in &invalid.problems {
                text.push_str(&format!("\n  - {problem}."));
            }
            text
        }
    }
}

/// True when `argument` names a file to read (or stdin), not a stored
/// blueprint's id: anything that exists as a path, `-`, or does not
/// parse as a UUID.
pub(crate) fn is_file_argument(argument: &str) -> bool {
    argument == "-"
        || std::path::Path::new(argument).exists()
        || argument.parse::<baton_uuid_kinds::BlueprintUuid>().is_err()
}
