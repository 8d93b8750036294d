//! Tests of reading, validating and rendering blueprints.

mod author;
mod fixtures;
mod roundtrip;
mod succession;
mod validation;
