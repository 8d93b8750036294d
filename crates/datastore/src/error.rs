//! The datastore's errors: what happened, and whether a retry can help.

use baton_types::NexusRecordState;
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What went wrong in a datastore operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This datastore's pool was closed to new claims (the Nexus is
    /// quiescing). Permanent for this datastore.
    #[error("the datastore is quiesced: it hands out no new connections")]
    Quiesced,
    /// No connection could be had: the server's or the system's reason
    /// (authentication failed, no such database, no server there), or a
    /// pool whose connections were all in use.
    #[error("cannot get a database connection for {op}: {message}")]
    Connection {
        /// The operation.
        op: &'static str,
        /// Why, and whether retrying can help (the URL's password never
        /// appears here).
        message: String,
        /// True when the same call may succeed later.
        transient: bool,
    },
    /// The database URL is not one the driver understands.
    #[error("the database URL is malformed: {0}")]
    MalformedUrl(String),
    /// The database refused or failed the statement.
    #[error("database error in {op}: {message}")]
    Database {
        /// The operation.
        op: &'static str,
        /// The server's message.
        message: String,
        /// The SQLSTATE, where the driver keeps it (see
        /// [`Error::sqlstate`]).
        sqlstate: Option<&'static str>,
        /// True for failures a retry may cure (a dropped connection).
        transient: bool,
    },
    /// Every attempt hit a serialization failure (SQLSTATE 40001).
    #[error("{op} hit a serialization conflict on each of {attempts} attempts")]
    TooMuchContention {
        /// The operation.
        op: &'static str,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The blueprint being executed is no longer the current target, so
    /// nothing was written.
    #[error(
        "blueprint {blueprint_id} is not the current target (the target is \
         {}); nothing was written",
        current.map_or("not set".to_owned(), |c| c.to_string())
    )]
    TargetChanged {
        /// The blueprint being executed.
        blueprint_id: BlueprintUuid,
        /// The current target, if any.
        current: Option<BlueprintUuid>,
    },
    /// The Nexus running the record step or the cleanup is not in
    /// control (its own record is not `active` while records exist), so
    /// nothing was written.
    #[error(
        "Nexus {nexus_id} is not in control (its record is {}), so it may \
         not write db_metadata_nexus records; nothing was written",
        state.map_or("missing".to_owned(), |s| s.to_string())
    )]
    NotInControl {
        /// The executing Nexus.
        nexus_id: OmicronZoneUuid,
        /// Its record's state, if it has one.
        state: Option<NexusRecordState>,
    },
    /// No blueprint is the target yet.
    #[error("no blueprint has been made the target yet")]
    NoTarget,
    /// No blueprint with this id is stored.
    #[error("no blueprint {0} is stored")]
    BlueprintNotFound(BlueprintUuid),
    /// A different document is stored under the same id.
    #[error(
        "a different blueprint is already stored with id {0}; blueprints \
         are immutable"
    )]
    BlueprintConflict(BlueprintUuid),
    /// The target may move only to a child of the current target.
    #[error(
        "blueprint {blueprint_id} cannot become the target: its parent is \
         {}, but the current target is {current}",
        parent.map_or("none".to_owned(), |p| p.to_string())
    )]
    TargetNotChild {
        /// The blueprint offered.
        blueprint_id: BlueprintUuid,
        /// Its parent.
        parent: Option<BlueprintUuid>,
        /// The current target.
        current: BlueprintUuid,
    },
    /// The blueprint is the current target's child but breaks from it
    /// (an expunged zone back in service, a relabelled generation, a
    /// generation moved by more than one).
    #[error("{0}")]
    SuccessionRefused(baton_types::SuccessionError),
    /// A stored document no longer reads as a blueprint.
    #[error("stored blueprint {id} cannot be read: {message}")]
    StoredBlueprintUnreadable {
        /// The blueprint.
        id: BlueprintUuid,
        /// Why.
        message: String,
    },
    /// Rack setup found records already present.
    #[error(
        "db_metadata_nexus already holds {0} record(s); initialization only \
         runs on an empty table"
    )]
    AlreadyInitialized(i64),
    /// The Nexus has no record.
    #[error("Nexus {0} has no db_metadata_nexus record")]
    NotRegistered(OmicronZoneUuid),
    /// Handoff refused: some Nexus is still allowed to use the database.
    #[error(
        "handoff refused: {0} Nexus instance(s) are still active (their \
         records are neither not_yet nor quiesced)"
    )]
    HandoffStillActive(i64),
    /// Handoff refused: the caller has no record.
    #[error("handoff refused: Nexus {0} is not registered (no record)")]
    HandoffNotRegistered(OmicronZoneUuid),
    /// Handoff refused: the caller's record is not `not_yet`.
    #[error(
        "handoff refused: Nexus {nexus_id} is in the wrong state \
         ({state}, not not_yet)"
    )]
    HandoffWrongState {
        /// The caller.
        nexus_id: OmicronZoneUuid,
        /// Its state.
        state: NexusRecordState,
    },
    /// The reserved quiesce claim was asked for too early or twice.
    #[error("cannot mark quiesced yet: {0}")]
    FenceNotDrained(&'static str),
    /// The schema is missing or from the future.
    #[error("schema problem: {0}")]
    Schema(String),
    /// The database fence refused this datastore's Nexus: its record is
    /// no longer `active` (it was marked `quiesced`, by itself or by an
    /// operator's force), so nothing it runs can commit. Permanent: the
    /// Nexus is out, and stops.
    #[error(
        "Nexus {nexus_id} is fenced out of the database: its record is {}, \
         not active, so nothing it runs can commit (it was marked quiesced, \
         by itself or by an operator)",
        state.map_or("missing".to_owned(), |s| s.to_string())
    )]
    Fenced {
        /// The Nexus.
        nexus_id: OmicronZoneUuid,
        /// Its record's state (`None`: it has no record).
        state: Option<NexusRecordState>,
    },
    /// A `quiesced` mark could not take the Nexus's fence lock: a session
    /// of that Nexus kept reconnecting while its others were ended.
    #[error(
        "cannot mark Nexus {0} quiesced: it kept opening new database \
         sessions while its others were ended; try again"
    )]
    FenceBusy(OmicronZoneUuid),
}

impl Error {
    /// A database error from a statement of one's own, with its SQLSTATE
    /// kept where the driver reports one, and whether a retry may help.
    pub fn from_diesel(op: &'static str, e: diesel::result::Error) -> Error {
        database_error(op, e)
    }

    /// The SQLSTATE of a database error: kept for the codes the driver
    /// maps (unique, foreign-key, not-null and check violations,
    /// serialization failure, read-only transaction); `None` otherwise.
    pub fn sqlstate(&self) -> Option<&'static str> {
        match self {
            Error::Database { sqlstate, .. } => *sqlstate,
            Error::TooMuchContention { .. } => Some("40001"),
            _ => None,
        }
    }

    /// A connection failure for `op`.
    pub(crate) fn connection(
        op: &'static str,
        failure: &crate::connect::ConnectFailure,
    ) -> Error {
        Error::Connection {
            op,
            message: failure.message(),
            transient: failure.transient,
        }
    }

    /// True when trying the same call again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection { transient, .. } => *transient,
            Error::TooMuchContention { .. }
            | Error::HandoffStillActive(_)
            | Error::HandoffNotRegistered(_)
            | Error::HandoffWrongState { .. } => true,
            Error::Database { transient, .. } => *transient,
            Error::Quiesced
            | Error::MalformedUrl(_)
            | Error::TargetChanged { .. }
            | Error::NotInControl { .. }
            | Error::NoTarget
            | Error::BlueprintNotFound(_)
            | Error::BlueprintConflict(_)
            | Error::TargetNotChild { .. }
            | Error::SuccessionRefused(_)
            | Error::StoredBlueprintUnreadable { .. }
            | Error::AlreadyInitialized(_)
            | Error::NotRegistered(_)
            | Error::FenceNotDrained(_)
            | Error::Schema(_)
            | Error::Fenced { .. } => false,
            Error::FenceBusy(_) => true,
        }
    }
}

pub(crate) fn is_serialization_failure(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
    )
}

/// The connection was found closed when the statement was sent: its
/// backend died earlier (killed, or the server restarted). A single
/// statement is retried as after a serialization failure; a transaction
/// is not. (tokio-postgres reports a connection that dies
/// *during* a statement the same way; then the statement may have run.
/// Every Baton operation is safe to repeat: each is idempotent or
/// recognises its own earlier success, such as a handoff by a Nexus
/// already `active`.)
pub(crate) fn is_unsent(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
    )
}

pub(crate) fn database_error(op: &'static str, e: DieselError) -> Error {
    let transient = matches!(
        e,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | DieselError::BrokenTransactionManager
    ) || matches!(&e, DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
        if info.message().contains("terminat") || info.message().contains("connection"));
    // A connection lost with the statement (or its COMMIT) sent: the
    // caller cannot know whether it took effect, and should be told so.
    let message = if transient {
        format!(
            "{e} (the connection was lost before the answer came: the \
             operation may or may not have taken effect; retrying it is \
             safe)"
        )
    } else if never_migrated(&e) {
        format!(
            "{e} (the database has no Baton schema yet: run `baton db \
             migrate`, or start a Nexus, which applies it)"
        )
    } else {
        e.to_string()
    };
    Error::Database {
        op,
        sqlstate: sqlstate(&e),
        message,
        transient,
    }
}

/// A statement named one of Baton's tables and the server has none
/// (SQLSTATE 42P01, which the driver does not map: told by its words).
fn never_migrated(e: &DieselError) -> bool {
    let DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) = e else {
        return false;
    };
    let message = info.message();
    message.ends_with("does not exist")
        && crate::schema::declared_tables().iter().any(|(table, _)| {
            message == format!("relation \"{table}\" does not exist")
        })
}

/// The SQLSTATE of a database error, where the driver keeps it: diesel
/// reports a kind, not the code, and diesel-async maps these codes to
/// kinds; any other server error is `Unknown` and its code is lost.
fn sqlstate(e: &DieselError) -> Option<&'static str> {
    let DieselError::DatabaseError(kind, _) = e else {
        return None;
    };
    Some(match kind {
        DatabaseErrorKind::UniqueViolation => "23505",
        DatabaseErrorKind::ForeignKeyViolation => "23503",
        DatabaseErrorKind::RestrictViolation => "23001",
        DatabaseErrorKind::ExclusionViolation => "23P01",
        DatabaseErrorKind::SerializationFailure => "40001",
        DatabaseErrorKind::ReadOnlyTransaction => "25006",
        DatabaseErrorKind::NotNullViolation => "23502",
        DatabaseErrorKind::CheckViolation => "23514",
        _ => return None,
    })
}
