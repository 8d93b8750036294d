//! Writing to stdout and stderr without panicking on a closed pipe.

use std::io::Write;

/// Writes `text` and a newline to stdout. A reader that went away (a
/// closed pipe) is not an error worth a panic.
pub(crate) fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Writes a JSON document to stdout, alone.
pub(crate) fn json(value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value)
        .expect("output types always serialize");
    line(&text);
}

/// Writes an error message to stderr.
pub(crate) fn error(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {text}");
}
