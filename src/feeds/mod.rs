//! The feed store on Cosmos DB (design: `docs/storage.md`). No Cosmos type
//! leaves this module.

mod cosmos;
#[cfg(feature = "dev")]
pub mod emulator;

pub use cosmos::{Cosmos, CosmosError};
