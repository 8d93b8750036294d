//! The ledger service handing off across real processes on a real
//! PostgreSQL.

mod clients;
mod flags;
mod ha_faults;
mod handoff;
mod metrics;
mod rig;
mod status;
mod zombie;
