//! Domain types: parsed, not validated-later.

pub mod cloud_event;
pub mod query;

pub use cloud_event::{AppSource, CloudEventError, server_time};
