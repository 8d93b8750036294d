//! How a command fails: the exit status and the sentences to print.

use baton_datastore::Error as DbError;

/// How a command failed: the exit status and the sentence(s) to print.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: Status,
    pub message: String,
}

/// The contract's exit statuses other than success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// The operation ran and failed (or finished with a warning).
    Failed = 1,
    /// Bad input or usage.
    BadInput = 2,
}

impl Failure {
    pub(crate) fn bad_input(message: impl Into<String>) -> Failure {
        Failure {
            status: Status::BadInput,
            message: message.into(),
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            status: Status::Failed,
            message: message.into(),
        }
    }
}

impl From<DbError> for Failure {
    /// Unknown ids, a malformed URL and a blueprint that breaks from its
    /// parent are bad input (2); everything else that the operation ran
    /// into is a failure (1), a connection that could not be had
    /// included.
    fn from(e: DbError) -> Failure {
        let text = e.to_string();
        let sentence = if text.ends_with('.') {
            text
        } else {
            format!("{text}.")
        };
        match e {
            DbError::BlueprintNotFound(_)
            | DbError::NotRegistered(_)
            | DbError::MalformedUrl(_)
            | DbError::SuccessionRefused(_) => Failure::bad_input(sentence),
            _ => Failure::failed(sentence),
        }
    }
}
