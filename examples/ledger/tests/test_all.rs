//! The ledger service handing off across real processes on a real
//! PostgreSQL.

mod handoff;
mod metrics;
mod rig;
mod status;
mod zombie;
