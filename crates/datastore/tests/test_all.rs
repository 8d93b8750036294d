//! Datastore tests, each against its own real PostgreSQL server.

mod access;
mod blueprints;
mod cancel;
mod claim_tx;
mod common;
mod connect;
mod db_fence;
mod deadline;
mod fence;
mod handoff;
mod isolation;
mod migrations;
mod notify;
mod records;
mod schema;
