//! What the instances of a deployment share to divide the work and to hear
//! of each other's changes: the delivery buckets' leases and each
//! instance's presence (`leases.rs`), and the containers' change feeds,
//! followed once per instance (`changes.rs`).

pub mod changes;
mod leases;

pub use leases::{BucketLease, LeaseStore};
