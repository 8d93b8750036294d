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
    /// Unknown ids and a malformed URL are bad input (2); everything else
    /// that the operation ran into is a failure (1), a connection that
    /// could not be had included.
    fn from(e: DbError) -> Failure {
        match e {
            DbError::BlueprintNotFound(_)
            | DbError::NotRegistered(_)
            | DbError::MalformedUrl(_) => Failure::bad_input(format!("{e}.")),
            e => Failure::failed(format!("{e}.")),
        }
    }
}
