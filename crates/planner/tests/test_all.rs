//! Tests of the planner's decisions.

mod bump_and_expunge;
mod classify_properties;
mod decisions;
mod mutated_documents;
mod status;
