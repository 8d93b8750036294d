//! Tests of reading, validating and rendering blueprints.

mod fixtures;
mod roundtrip;
mod succession;
mod validation;
