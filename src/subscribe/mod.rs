//! The subscriptions use case: Altinn's subscription API (create, list,
//! read, delete) with its creation rules, texts and PDP checks, the
//! validation push, re-validation and signing-secret rotation. Knows
//! nothing of HTTP.
//!
//! Invariants it keeps:
//! - only the consumer that created a subscription reads, changes or
//!   deletes it;
//! - a subscription is created only when the PDP permits its consumer to
//!   read (app events) or subscribe to (generic events) what it follows;
//! - a new or re-validated subscription gets the validation event, signed,
//!   at once and then on `webhooks.validation_retry_seconds` while it
//!   fails; any 2xx makes it `validated`; the outcome and the last error are
//!   stored on it, where every instance reads them (nothing is cached);
//! - a signing secret is shown once (at creation, or when rotated) and
//!   never logged; a rotated-out secret keeps signing for 24 hours.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use tokio::sync::{Notify, watch};
use url::Url;

use crate::authz::{Action, Authorizer, Caller, PdpError};
use crate::domain::subscription::{
    DeliveryState, DeliveryStatus, Kind, SigningSecret, Subscription, SubscriptionFilters, SubscriptionRequest,
    Validation, ValidationStatus, absolute_url, app_of_resource, app_of_source, consumer_of, in_apps_domain, is_urn,
    texts,
};
use crate::domain::{EventRecord, Principal};
use crate::feeds::delivery::DeliveryStore;
use crate::feeds::subscriptions::{Changed, Stored, SubscriptionStore};
use crate::feeds::{FeedError, FeedStore};
use crate::read::Start;
use crate::register::{PartyRef, PartyRegister, RegisterError};
use crate::webhooks::{Sender, signing};

pub const SCOPE_SUBSCRIBE: &str = "altinn:events.subscribe";
/// How long a rotated-out secret keeps signing.
const SECRET_OVERLAP_MS: u64 = 24 * 3600 * 1000;
/// How long an instance has to finish a validation attempt it claimed.
const CLAIM_MS: u64 = 120_000;
/// How often validators look for attempts due elsewhere.
const SWEEP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// A creation rule refused the request (Altinn's text).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such subscription")]
    NotFound,
    #[error("the subscription belongs to another consumer")]
    NotOwner,
    #[error("storing the subscription")]
    Storage(#[from] FeedError),
    #[error("authorizing the subscription")]
    Authorization(#[source] PdpError),
    #[error("looking up the subject")]
    Register(#[source] RegisterError),
}

/// Settings of the use case.
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    /// Hosts whose sources are apps' (`apps.altinn.no`, ...).
    pub apps_domains: Vec<String>,
    /// Waits between validation attempts; after the last, `failing`.
    pub validation_retry: Vec<Duration>,
    /// The platform URL (validation events name their subscription under it).
    pub platform_base: Url,
}

/// A created subscription, and its secret when it is new.
pub struct Created {
    pub subscription: Subscription,
    /// Shown once: `None` when the same subscription existed already.
    pub secret: Option<SecretString>,
}

pub struct Subscriptions {
    store: SubscriptionStore,
    deliveries: DeliveryStore,
    feeds: FeedStore,
    pdp: Arc<dyn Authorizer>,
    register: Arc<dyn PartyRegister>,
    sender: Arc<Sender>,
    settings: SubscriptionSettings,
    wake: Notify,
    /// Told the id of every subscription (or delivery state) this instance
    /// changed: its deliverer, when it runs here, acts on it at once (other
    /// instances learn of it from the change feed).
    changed: Arc<dyn Fn(u64) + Send + Sync>,
}

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn invalid(text: &str) -> SubscribeError {
    SubscribeError::Invalid(text.to_owned())
}

impl Subscriptions {
    pub fn new(
        store: SubscriptionStore,
        feeds: FeedStore,
        pdp: Arc<dyn Authorizer>,
        register: Arc<dyn PartyRegister>,
        sender: Arc<Sender>,
        settings: SubscriptionSettings,
        changed: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Self {
        let deliveries = DeliveryStore::new(&feeds);
        Self { deliveries, store, feeds, pdp, register, sender, settings, wake: Notify::new(), changed }
    }

    /// Altinn's creation rules, in Altinn's order; then the PDP; then the
    /// store (the same subscription again is the existing one).
    pub async fn create(&self, principal: &Principal, req: SubscriptionRequest) -> Result<Created, SubscribeError> {
        let trimmed = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        // 1. The endpoint (and where events are pushed is safe), the source.
        let end_point = trimmed(&req.end_point)
            .and_then(|e| absolute_url(&e, self.sender.allows_http()))
            .ok_or_else(|| invalid(texts::ENDPOINT))?;
        self.sender.check_endpoint(&end_point).await.map_err(|e| SubscribeError::Invalid(e.to_string()))?;
        let source = trimmed(&req.source_filter);
        let source_url = match &source {
            Some(s) => Some(absolute_url(s, false).ok_or_else(|| invalid(texts::SOURCE_URL))?),
            None => None,
        };
        let resource = trimmed(&req.resource_filter);
        // 2. App or generic.
        let app_resource = resource.as_deref().is_some_and(|r| r.starts_with("urn:altinn:resource:app_"));
        let app_source = source_url.as_ref().is_some_and(|u| in_apps_domain(u, &self.settings.apps_domains));
        let generic = !app_resource && !app_source;
        if generic && !principal.has_scope(SCOPE_SUBSCRIBE) {
            return Err(SubscribeError::Forbidden(format!("The token lacks the scope {SCOPE_SUBSCRIBE}.")));
        }
        // 3. The resource is a URN.
        if resource.as_deref().is_some_and(|r| !is_urn(r)) {
            return Err(invalid(texts::RESOURCE_URN));
        }
        let consumer = consumer_of(principal);
        let mut subject = trimmed(&req.subject_filter);
        let alternative = trimmed(&req.alternative_subject_filter);
        let (kind, resource) = if generic {
            // 5. Generic resources.
            let resource = resource.ok_or_else(|| invalid(texts::RESOURCE_REQUIRED))?;
            if source.is_some() {
                return Err(invalid(texts::SOURCE_UNSUPPORTED));
            }
            if alternative.is_some() {
                return Err(invalid(texts::ALTERNATIVE_SUBJECT_UNSUPPORTED));
            }
            (Kind::Generic, resource)
        } else {
            // 4. Apps: the app from the source (or the resource), the two agreeing.
            let from_source = match &source {
                Some(s) => Some(app_of_source(s).ok_or_else(|| invalid(texts::APP_ID))?),
                None => None,
            };
            let from_resource = resource.as_deref().and_then(app_of_resource);
            let (org, app) = match (from_source, from_resource) {
                (Some(s), Some(r)) if s != r => return Err(invalid(texts::INCOMPATIBLE)),
                (Some(s), _) => s,
                (None, Some(r)) => r,
                (None, None) => return Err(invalid(texts::APP_ID)),
            };
            if let Some(alt) = &alternative {
                subject = Some(self.party_of_alternative_subject(alt).await?);
            }
            if subject.is_none() && consumer != format!("/org/{org}") {
                return Err(invalid(texts::SUBJECT_REQUIRED));
            }
            let resource = format!("urn:altinn:resource:app_{org}_{app}");
            (Kind::App { org, app }, resource)
        };
        // 6. Subunits need a subject.
        if req.include_subunits && subject.is_none() {
            return Err(invalid(texts::SUBUNITS));
        }
        let filters = SubscriptionFilters {
            source_filter: source,
            resource_filter: resource,
            subject_filter: subject,
            alternative_subject_filter: alternative,
            type_filter: trimmed(&req.type_filter),
            include_subunits: req.include_subunits,
        };
        // 7. The PDP: may this consumer read (apps) or subscribe to (generic) it?
        self.authorize(principal, &kind, &filters).await?;
        // 8. Stored, unless it exists. Events from the feed's current end on
        // are pushed to it.
        let app = matches!(kind, Kind::App { .. });
        let feed = match &filters.subject_filter {
            Some(subject) => crate::domain::FeedId::Subject(subject.clone()),
            None => crate::domain::FeedId::Resource(filters.resource_filter.clone()),
        };
        let starts_at = self.feeds.len(&feed).await?;
        let secret = signing::new_secret();
        let end_point = end_point.to_string();
        let identity = Subscription::identity(&consumer, &end_point, &filters);
        let created = crate::domain::server_time();
        let make = |id| Subscription {
            id,
            end_point: end_point.clone(),
            filters: filters.clone(),
            consumer: consumer.clone(),
            created_by: consumer.clone(),
            created: created.clone(),
            validation: Validation {
                status: ValidationStatus::Validating,
                attempts: 0,
                last_error: None,
                next_attempt_ms: Some(now_ms()),
                claimed_until_ms: None,
            },
            secrets: vec![SigningSecret { value: secret.clone(), expires_ms: None }],
            caller: principal.clone(),
            app,
            starts_at,
        };
        let (subscription, new) = self.store.create(&identity, make).await?;
        if new {
            metrics::counter!("subscriptions_created_total").increment(1);
            self.wake.notify_one();
            (self.changed)(subscription.id);
        }
        Ok(Created { subscription, secret: new.then_some(secret) })
    }

    /// `/org/{orgno}`, `/organisation/{orgno}`, `/person/{ssn}` as the
    /// party Register knows it: `/party/{id}`.
    async fn party_of_alternative_subject(&self, alternative: &str) -> Result<String, SubscribeError> {
        let reference = if let Some(n) = alternative.strip_prefix("/person/") {
            PartyRef::Ssn(n.to_owned())
        } else if let Some(n) = alternative.strip_prefix("/organisation/").or_else(|| alternative.strip_prefix("/org/"))
        {
            PartyRef::OrgNo(n.to_owned())
        } else {
            return Err(invalid(texts::SUBJECT_REQUIRED));
        };
        match self.register.party_id(&reference).await {
            Ok(party) => Ok(format!("/party/{party}")),
            Err(RegisterError::NotFound | RegisterError::Refused(_)) => Err(invalid(texts::SUBJECT_REQUIRED)),
            Err(e) => Err(SubscribeError::Register(e)),
        }
    }

    /// Asks the PDP as it would for an event the subscription follows.
    async fn authorize(
        &self,
        principal: &Principal,
        kind: &Kind,
        filters: &SubscriptionFilters,
    ) -> Result<(), SubscribeError> {
        let (action, source) = match kind {
            Kind::App { org, app } => (Action::Read, format!("https://{org}.apps/{org}/{app}")),
            Kind::Generic => (Action::Subscribe, filters.source_filter.clone().unwrap_or_default()),
        };
        let probe = EventRecord {
            id: "subscription".into(),
            source,
            subject: filters.subject_filter.clone().unwrap_or_default(),
            resource: filters.resource_filter.clone(),
            event_type: filters.type_filter.clone().unwrap_or_default(),
            time: crate::domain::server_time(),
            alternativesubject: None,
            resourceinstance: None,
            cloud_event: json!({}),
        };
        let permitted = self
            .pdp
            .authorize(Caller::Principal(principal), action, &[&probe])
            .await
            .map_err(SubscribeError::Authorization)?;
        if permitted.first() != Some(&true) {
            return Err(SubscribeError::Forbidden(format!(
                "Not authorized to create a subscription for resource {}.",
                filters.resource_filter
            )));
        }
        Ok(())
    }

    /// The caller's subscriptions.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Subscription>, SubscribeError> {
        Ok(self.store.list(&consumer_of(principal)).await?)
    }

    async fn owned(&self, principal: &Principal, id: u64) -> Result<Stored, SubscribeError> {
        let stored = self.store.get(id).await?.ok_or(SubscribeError::NotFound)?;
        if stored.subscription.consumer != consumer_of(principal) {
            return Err(SubscribeError::NotOwner);
        }
        Ok(stored)
    }

    /// One of the caller's subscriptions.
    pub async fn get(&self, principal: &Principal, id: u64) -> Result<Subscription, SubscribeError> {
        Ok(self.owned(principal, id).await?.subscription)
    }

    /// Deletes one of the caller's subscriptions: nothing is pushed for it
    /// from then on.
    pub async fn delete(&self, principal: &Principal, id: u64) -> Result<(), SubscribeError> {
        for _ in 0..10 {
            let stored = self.owned(principal, id).await?;
            if let Changed::Done(()) = self.store.delete(&stored).await? {
                metrics::counter!("subscriptions_deleted_total").increment(1);
                (self.changed)(id);
                // Its deliverer removes the state too when it sees it gone.
                if let Err(e) = self.deliveries.remove(id).await {
                    tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "removing a delivery state failed");
                }
                return Ok(());
            }
        }
        Err(SubscribeError::Storage(FeedError::Transient("the subscription kept changing".into())))
    }

    /// Runs validation of one of the caller's subscriptions again, at once.
    pub async fn revalidate(&self, principal: &Principal, id: u64) -> Result<Subscription, SubscribeError> {
        let updated = self
            .change(principal, id, |s| {
                s.validation = Validation {
                    status: ValidationStatus::Validating,
                    attempts: 0,
                    last_error: None,
                    next_attempt_ms: Some(now_ms()),
                    claimed_until_ms: None,
                };
            })
            .await?;
        self.wake.notify_one();
        Ok(updated)
    }

    /// A new signing secret for one of the caller's subscriptions; the
    /// current ones keep signing for 24 hours.
    pub async fn rotate_secret(
        &self,
        principal: &Principal,
        id: u64,
    ) -> Result<(Subscription, SecretString), SubscribeError> {
        let secret = signing::new_secret();
        let now = now_ms();
        let updated = self
            .change(principal, id, |s| {
                s.secrets.retain(|x| x.expires_ms.is_none_or(|e| e > now));
                for old in &mut s.secrets {
                    old.expires_ms.get_or_insert(now + SECRET_OVERLAP_MS);
                }
                s.secrets.push(SigningSecret { value: secret.clone(), expires_ms: None });
            })
            .await?;
        Ok((updated, secret))
    }

    /// How delivery of one of the caller's subscriptions stands, and how
    /// many events its feed holds beyond the checkpoint.
    pub async fn delivery(
        &self,
        principal: &Principal,
        id: u64,
    ) -> Result<(Subscription, DeliveryState, u64), SubscribeError> {
        let subscription = self.owned(principal, id).await?.subscription;
        let (state, behind) = self.delivery_of(&subscription).await?;
        Ok((subscription, state, behind))
    }

    /// How delivery of `subscription` stands (as it starts, when no
    /// deliverer has written yet), and how many events it is behind.
    pub async fn delivery_of(&self, subscription: &Subscription) -> Result<(DeliveryState, u64), SubscribeError> {
        let state = match self.deliveries.state(subscription.id).await? {
            Some((state, _)) => state,
            None => DeliveryState::starting_at(subscription.starts_at),
        };
        let behind = self.feeds.len(&subscription.feed()).await?.saturating_sub(state.checkpoint);
        Ok((state, behind))
    }

    /// Resumes a disabled (or failing) subscription from its checkpoint, now.
    pub async fn enable(&self, principal: &Principal, id: u64) -> Result<Subscription, SubscribeError> {
        self.change_delivery(principal, id, |state| {
            state.status = DeliveryStatus::Active;
            state.failures = 0;
            state.next_retry_ms = None;
            state.last_error = None;
        })
        .await
    }

    /// Moves the checkpoint of one of the caller's subscriptions to where
    /// `start` says (back, to replay; or forward, to skip).
    pub async fn replay(&self, principal: &Principal, id: u64, start: Start) -> Result<Subscription, SubscribeError> {
        let subscription = self.owned(principal, id).await?.subscription;
        let feed = subscription.feed();
        let position = crate::read::position(&self.feeds, &feed, &start)
            .await?
            .ok_or_else(|| invalid("No event with that id is in the subscription's feed."))?;
        self.change_delivery(principal, id, move |state| {
            state.checkpoint = position;
            state.status = DeliveryStatus::Active;
            state.failures = 0;
            state.next_retry_ms = None;
            state.last_error = None;
        })
        .await
    }

    /// Changes the delivery state as its owner; a new generation, so that the
    /// deliverer, wherever it runs, starts again from it.
    async fn change_delivery(
        &self,
        principal: &Principal,
        id: u64,
        edit: impl Fn(&mut DeliveryState),
    ) -> Result<Subscription, SubscribeError> {
        let subscription = self.owned(principal, id).await?.subscription;
        for _ in 0..10 {
            let (mut state, etag) =
                self.deliveries.state_or(id, DeliveryState::starting_at(subscription.starts_at)).await?;
            edit(&mut state);
            state.generation += 1;
            if let Changed::Done(_) = self.deliveries.write(id, &state, &etag).await? {
                (self.changed)(id);
                return Ok(subscription);
            }
        }
        Err(SubscribeError::Storage(FeedError::Transient("the delivery state kept changing".into())))
    }

    async fn change(
        &self,
        principal: &Principal,
        id: u64,
        edit: impl Fn(&mut Subscription),
    ) -> Result<Subscription, SubscribeError> {
        for _ in 0..10 {
            let stored = self.owned(principal, id).await?;
            let mut next = stored.subscription.clone();
            edit(&mut next);
            if let Changed::Done(done) = self.store.replace(&stored, next).await? {
                (self.changed)(id);
                return Ok(done.subscription);
            }
        }
        Err(SubscribeError::Storage(FeedError::Transient("the subscription kept changing".into())))
    }

    /// Validates subscriptions until `stop`: at once when one is created or
    /// re-validated here, when a retry is due, and every 30 s for attempts
    /// that other instances left (a claim that ran out).
    /// Looks for due validations now (a subscription changed, perhaps on
    /// another instance).
    pub fn wake_validator(&self) {
        self.wake.notify_one();
    }

    pub async fn run_validator(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // At once at start: what is due (or was left by an instance that
        // stopped) is not left waiting for a sweep.
        let mut next_due: Option<u64> = Some(0);
        loop {
            let wait = next_due.map_or(SWEEP, |due| Duration::from_millis(due.saturating_sub(now_ms())).min(SWEEP));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // A wake-up (a change anywhere) must not forget a retry this
            // instance already has in the diary.
            let known = next_due.filter(|due| *due > now_ms());
            next_due = match self.validate_due().await {
                Ok(next) => match (next, known) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (next, known) => next.or(known),
                },
                Err(e) => {
                    tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "validating subscriptions failed");
                    Some(now_ms() + 1000)
                }
            };
        }
    }

    /// Runs every attempt that is due; the time of the next one it knows of.
    async fn validate_due(&self) -> Result<Option<u64>, FeedError> {
        let now = now_ms();
        let mut next: Option<u64> = None;
        for stored in self.store.due_validations(now).await? {
            // Claim it, so that no other instance pushes it at the same time.
            let mut claimed = stored.subscription.clone();
            claimed.validation.claimed_until_ms = Some(now + CLAIM_MS);
            let Changed::Done(stored) = self.store.replace(&stored, claimed).await? else { continue };
            if let Some(due) = self.attempt(stored).await? {
                next = Some(next.map_or(due, |n: u64| n.min(due)));
            }
        }
        Ok(next)
    }

    /// One validation push and its outcome, stored; when the next is due.
    async fn attempt(&self, stored: Stored) -> Result<Option<u64>, FeedError> {
        let s = &stored.subscription;
        let id = uuid::Uuid::new_v4().to_string();
        let base = self.settings.platform_base.as_str().trim_end_matches('/');
        let event = json!({"specversion": "1.0", "id": id, "type": "platform.events.validatesubscription",
            "source": format!("{base}/events/api/v1/subscriptions/{}", s.id)});
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let Ok(url) = Url::parse(&s.end_point) else { return Ok(None) };
        let outcome = self.sender.push(&url, &id, &body, &s.active_secrets(now_ms())).await;
        let mut next = s.clone();
        next.validation.claimed_until_ms = None;
        next.validation.attempts += 1;
        let due = if outcome.delivered() {
            metrics::counter!("subscription_validations_total", "outcome" => "validated").increment(1);
            next.validation.status = ValidationStatus::Active;
            next.validation.last_error = None;
            next.validation.next_attempt_ms = None;
            None
        } else {
            metrics::counter!("subscription_validations_total", "outcome" => "failed").increment(1);
            next.validation.last_error = outcome.error.clone();
            let wait = self.settings.validation_retry.get(next.validation.attempts as usize - 1);
            match wait {
                Some(wait) => {
                    let due = now_ms() + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    next.validation.next_attempt_ms = Some(due);
                    Some(due)
                }
                None => {
                    next.validation.status = ValidationStatus::Failing;
                    next.validation.next_attempt_ms = None;
                    None
                }
            }
        };
        // Deleted or changed meanwhile (re-validated, rotated): its new
        // state rules; nothing to store.
        if let Changed::Done(_) = self.store.replace(&stored, next).await? {
            (self.changed)(stored.subscription.id);
        }
        Ok(due)
    }
}
