//! Domain types: parsed, not validated-later.

pub mod cloud_event;

pub use cloud_event::{AppSource, CloudEventError, server_time};
