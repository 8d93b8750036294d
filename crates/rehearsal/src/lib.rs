//! A whole Baton handoff rehearsed, and a handoff timed as the service
//! feels it: what `baton demo` runs and prints, what the integration
//! tests and the benchmarks drive.
//!
//! - [`rehearsal`] plays the operator and the planner around real
//!   Nexus instances (`baton_nexus::Nexus`) on a real, empty database,
//!   each embedding a small demo service, and reports the handoff from
//!   the service's side.
//! - [`timeline`] listens for a handoff's announcements and turns the
//!   server's commit times into the window the service could not write
//!   and its parts.
//!
//! It is a development and demonstration crate, kept out of
//! `baton-nexus` so that a service that embeds Baton compiles none of
//! it. It must not be a dependency of any crate a service embeds
//! (`baton-nexus` and everything below it), and it holds no part of the
//! protocol: it uses the Nexus handle, the planner's decisions and the
//! datastore only through their public APIs, as a service and an
//! operator would.

pub mod rehearsal;
pub mod timeline;
