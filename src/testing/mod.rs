//! Test doubles for the store: [`SimStorage`] (an in-memory, seeded file system with fault
//! injection and crash simulation) and [`SimClock`]; and [`sim_ha`], the deterministic
//! simulator of a master and a slave on them (`ringmq-sim`). Compiled for tests and with the `sim`
//! feature only; never on the hot path of a release binary.

pub mod sim_ha;
pub mod sim_storage;

pub use sim_storage::{SimClock, SimFaults, SimStorage};
