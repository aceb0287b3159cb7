//! Domain types: parsed, not validated-later. The bottom layer: imports
//! nothing from the rest of the crate.

pub mod caller;
pub mod cloud_event;
pub mod event;
pub mod query;
pub mod subscription;

pub use caller::{PlatformApp, Principal, Subject};
pub use cloud_event::{AppSource, CloudEventError, server_time};
pub use event::{EventRecord, FeedId, FieldMatch, Filters};
