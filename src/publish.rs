//! The publish use case: an app's instance event, or a generic CloudEvent
//! for a resource, stored in its two feeds. Knows nothing of HTTP.
//!
//! Invariants it keeps:
//! - an app event is stored only for the app named by the platform access
//!   token that publishes it (the source names `/{org}/{app}`);
//! - a generic event is stored only when the PDP permits `publish` (or the
//!   caller is an admin): a PDP failure stores nothing;
//! - when `publish` returns, the event is in both its feeds (visible at
//!   once); the same `(id, source)` again stores nothing new.

use std::sync::Arc;

use serde_json::Value;

use crate::authz::{Action, Authorizer, Caller, PdpError};
use crate::domain::cloud_event::{self, CloudEventError};
use crate::domain::{EventRecord, PlatformApp};
use crate::feeds::{FeedStore, IdSource, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Invalid(#[from] CloudEventError),
    /// The source is another app's.
    #[error("{app} is not authorized to create events for {event_source}")]
    NotTheAppsSource { app: String, event_source: String },
    #[error("Not authorized to publish events for {resource}.")]
    Denied { resource: String },
    #[error("authorizing the publish")]
    Authorization(#[source] PdpError),
    #[error("storing the event")]
    Storage(#[from] StoreError),
    /// More publishes in flight on this instance than it takes at once.
    #[error("too many publishes in flight")]
    Overloaded,
}

/// Who decides whether a generic event may be published.
#[derive(Debug, Clone, Copy)]
pub enum PublishCheck<'a> {
    /// The PDP, for this caller (`publish` on the event's resource).
    Pdp(Caller<'a>),
    /// Nobody: the caller holds `altinn:events.publish.admin`.
    Admin,
}

/// A stored event: its id and the subject it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub subject: String,
}

pub struct Publisher {
    feeds: FeedStore,
    pdp: Arc<dyn Authorizer>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Publisher {
    pub fn new(feeds: FeedStore, pdp: Arc<dyn Authorizer>) -> Self {
        Self { feeds, pdp, in_flight: Arc::new(tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS)) }
    }

    /// Takes at most `n` publishes at once; more are refused at once
    /// (`PublishError::Overloaded`), before any work, instead of queueing.
    pub fn admitting(mut self, n: usize) -> Self {
        self.in_flight = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, PublishError> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("publishes_shed_total").increment(1);
            PublishError::Overloaded
        })
    }

    /// An app publishes an event about one of its instances (the body: a
    /// CloudEvent without `id` and `time`).
    pub async fn publish_app(&self, app: &PlatformApp, body: Value) -> Result<Published, PublishError> {
        let _slot = self.admit()?;
        let id = uuid::Uuid::new_v4().to_string();
        let (record, source) = cloud_event::app_event(body, id.clone(), cloud_event::server_time())?;
        if source.org != app.issuer || source.app != app.app {
            return Err(PublishError::NotTheAppsSource { app: app.app_id(), event_source: record.source });
        }
        let subject = record.subject.clone();
        self.feeds.append(record, IdSource::Server).await?;
        Ok(Published { id, subject })
    }

    /// A generic CloudEvent for a resource, if `check` permits it.
    pub async fn publish_generic(&self, check: PublishCheck<'_>, body: Value) -> Result<Published, PublishError> {
        let _slot = self.admit()?;
        let record = cloud_event::generic_event(body, cloud_event::server_time())?;
        if let PublishCheck::Pdp(caller) = check {
            self.authorize(caller, &record).await?;
        }
        let published = Published { id: record.id.clone(), subject: record.subject.clone() };
        self.feeds.append(record, IdSource::Publisher).await?;
        Ok(published)
    }

    async fn authorize(&self, caller: Caller<'_>, record: &EventRecord) -> Result<(), PublishError> {
        let permitted =
            self.pdp.authorize(caller, Action::Publish, &[record]).await.map_err(PublishError::Authorization)?;
        if permitted.first() != Some(&true) {
            return Err(PublishError::Denied { resource: record.resource.clone() });
        }
        Ok(())
    }
}
