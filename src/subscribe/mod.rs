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
//!   never logged; a rotated-out secret keeps signing for 24 hours;
//! - the endpoint is resolved (to check that it is public) only after the
//!   caller was found permitted, and a refusal names no address: a token
//!   holder cannot use creation to look up internal names;
//! - a consumer holds at most `max_per_consumer` subscriptions;
//! - neither `enable`, `replay` nor `validate` makes an endpoint be tried
//!   sooner than its schedule says: `enable` and `replay` resume a disabled
//!   subscription (whose schedule ran out) but leave a failing one's next
//!   retry where it is, and `validate` does not restart a validation that
//!   is running;
//! - validation attempts run concurrently, at most
//!   `max_validations_per_consumer` of one consumer at a time
//!   (`validator.rs`), and take push slots like deliveries: one consumer's
//!   endpoints that never answer hold up no other consumer's validation.

mod validator;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use tokio::sync::Notify;
use url::Url;

use crate::authz::{Action, Authorizer, Caller, PdpError};
use crate::domain::subscription::{
    DeliveryState, DeliveryStatus, Endpoint, Kind, SigningSecret, Subscription, SubscriptionFilters,
    SubscriptionRequest, Validation, ValidationStatus, absolute_url, app_of_resource, app_of_source, consumer_of,
    in_apps_domain, is_urn, texts,
};
use crate::domain::{EventRecord, Filters, Principal};
use crate::feeds::Changed;
use crate::feeds::subscriptions::DeliveryStore;
use crate::feeds::subscriptions::{Creation, Stored, SubscriptionStore};
use crate::feeds::{FeedStore, StoreError};
use crate::read::{ReadError, Start};
use crate::register::{PartyRef, PartyRegister, RegisterError};
use crate::webhooks::{Sender, signing};

pub const SCOPE_SUBSCRIBE: &str = "altinn:events.subscribe";
/// How long a rotated-out secret keeps signing.
const SECRET_OVERLAP_MS: u64 = 24 * 3600 * 1000;
/// Longest accepted endpoint or filter (as the read API's parameters).
const MAX_FIELD_LEN: usize = 1024;

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
    Storage(#[from] StoreError),
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
    /// How often the validator looks for due attempts no instance claimed.
    pub validation_sweep: Duration,
    /// The platform URL (validation events name their subscription under it).
    pub platform_base: Url,
    /// Subscriptions one consumer may hold.
    pub max_per_consumer: usize,
    /// Validation attempts one instance runs at once, and of one consumer.
    pub max_concurrent_validations: usize,
    pub max_validations_per_consumer: usize,
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

fn invalid(text: &str) -> SubscribeError {
    SubscribeError::Invalid(text.to_owned())
}

/// The request's endpoint and filters within the read API's bounds: at
/// most 1024 characters, no control characters (they would be stored,
/// pushed with and logged).
fn check_fields(req: &SubscriptionRequest) -> Result<(), SubscribeError> {
    let fields = [
        ("endPoint", &req.end_point),
        ("sourceFilter", &req.source_filter),
        ("resourceFilter", &req.resource_filter),
        ("subjectFilter", &req.subject_filter),
        ("alternativeSubjectFilter", &req.alternative_subject_filter),
        ("typeFilter", &req.type_filter),
    ];
    for (name, value) in fields {
        let Some(value) = value else { continue };
        if value.chars().count() > MAX_FIELD_LEN {
            return Err(SubscribeError::Invalid(format!("'{name}' is longer than {MAX_FIELD_LEN} characters.")));
        }
        if value.chars().any(char::is_control) {
            return Err(SubscribeError::Invalid(format!("'{name}' must not contain control characters.")));
        }
    }
    Ok(())
}

impl Subscriptions {
    /// Now, by the store's clock (which tests move forward).
    fn now_ms(&self) -> u64 {
        self.feeds.clock().now_ms()
    }

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
        check_fields(&req)?;
        let trimmed = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        // 1. The endpoint (that it is a URL: where it resolves is checked
        // once the caller is found permitted), the source.
        let end_point = trimmed(&req.end_point)
            .and_then(|e| absolute_url(&e, self.sender.allows_http()))
            .ok_or_else(|| invalid(texts::ENDPOINT))?;
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
        // Only now: where events would be pushed is safe (public, allowed port).
        self.sender.check_endpoint(&end_point).await.map_err(|e| SubscribeError::Invalid(e.to_string()))?;
        // 8. Stored, unless it exists.
        self.store_new(principal, consumer, end_point, filters).await
    }

    /// Stores a subscription that passed the rules, unless the same exists
    /// (then that one is the answer, without its secret). Events from the
    /// feed's current end on are pushed to it.
    async fn store_new(
        &self,
        principal: &Principal,
        consumer: String,
        end_point: url::Url,
        filters: SubscriptionFilters,
    ) -> Result<Created, SubscribeError> {
        let starts_at = self.feeds.len(&filters.feed()).await?;
        let secret = signing::new_secret();
        let end_point = Endpoint::from(end_point);
        let identity = Subscription::identity(&consumer, end_point.as_str(), &filters);
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
                next_attempt_ms: Some(self.now_ms()),
                claimed_until_ms: None,
            },
            secrets: vec![SigningSecret { value: secret.clone(), expires_ms: None }],
            caller: Some(principal.clone()),
            starts_at,
            imported: None,
        };
        match self.store.create(&identity, &consumer, self.settings.max_per_consumer, make).await? {
            Creation::Created(subscription) => {
                metrics::counter!("subscriptions_created_total").increment(1);
                self.wake.notify_one();
                (self.changed)(subscription.id);
                Ok(Created { subscription, secret: Some(secret) })
            }
            Creation::Existing(subscription) => Ok(Created { subscription, secret: None }),
            Creation::LimitReached => Err(SubscribeError::Invalid(format!(
                "A consumer can hold at most {} subscriptions; delete one before creating another.",
                self.settings.max_per_consumer
            ))),
        }
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
            origin: None,
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
        let mut list = self.store.list(&consumer_of(principal)).await?;
        if let Some(party) = self.legacy_consumer(principal).await? {
            list.extend(self.store.list(&party).await?);
            list.sort_by_key(|s| s.id);
        }
        Ok(list)
    }

    /// The other name an organisation's subscriptions may have: Altinn
    /// Events recorded organisations by party (`/party/{id}`) before it
    /// recorded them by number, and such subscriptions are imported as
    /// they were. `None` for everyone else (and an organisation Register
    /// does not know).
    async fn legacy_consumer(&self, principal: &Principal) -> Result<Option<String>, SubscribeError> {
        let crate::domain::Subject::Org { org: None, org_number } = &principal.subject else { return Ok(None) };
        match self.register.party_id(&PartyRef::OrgNo(org_number.clone())).await {
            Ok(party) => Ok(Some(format!("/party/{party}"))),
            Err(RegisterError::NotFound | RegisterError::Refused(_)) => Ok(None),
            Err(e) => Err(SubscribeError::Register(e)),
        }
    }

    async fn owned(&self, principal: &Principal, id: u64) -> Result<Stored, SubscribeError> {
        let stored = self.store.get(id).await?.ok_or(SubscribeError::NotFound)?;
        let consumer = &stored.subscription.consumer;
        if *consumer != consumer_of(principal)
            && (!consumer.starts_with("/party/")
                || self.legacy_consumer(principal).await?.as_deref() != Some(consumer.as_str()))
        {
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
        Err(SubscribeError::Storage(StoreError::Transient("the subscription kept changing".into())))
    }

    /// Runs validation of one of the caller's subscriptions again, at once;
    /// unless it is being validated now (then that round goes on, on its
    /// schedule).
    pub async fn revalidate(&self, principal: &Principal, id: u64) -> Result<Subscription, SubscribeError> {
        let updated = self
            .change(principal, id, |s| {
                if s.validation.status == ValidationStatus::Validating {
                    return false;
                }
                s.validation = Validation {
                    status: ValidationStatus::Validating,
                    attempts: 0,
                    last_error: None,
                    next_attempt_ms: Some(self.now_ms()),
                    claimed_until_ms: None,
                };
                true
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
        let now = self.now_ms();
        let updated = self
            .change(principal, id, |s| {
                s.secrets.retain(|x| x.expires_ms.is_none_or(|e| e > now));
                for old in &mut s.secrets {
                    old.expires_ms.get_or_insert(now + SECRET_OVERLAP_MS);
                }
                s.secrets.push(SigningSecret { value: secret.clone(), expires_ms: None });
                true
            })
            .await?;
        Ok((updated, secret))
    }

    /// How delivery of one of the caller's subscriptions stands.
    pub async fn delivery(
        &self,
        principal: &Principal,
        id: u64,
    ) -> Result<(Subscription, DeliveryState), SubscribeError> {
        let subscription = self.owned(principal, id).await?.subscription;
        let state = self.delivery_of(&subscription).await?;
        Ok((subscription, state))
    }

    /// How delivery of `subscription` stands (as it starts, when no
    /// deliverer has written yet).
    pub async fn delivery_of(&self, subscription: &Subscription) -> Result<DeliveryState, SubscribeError> {
        Ok(match self.deliveries.state(subscription.id).await? {
            Some((state, _)) => state,
            None => DeliveryState::starting_in(subscription.starts_at, self.feeds.generation().unwrap_or_default()),
        })
    }

    /// Resumes a disabled subscription from its checkpoint, now. A failing
    /// one is left as it is: its next retry stays where the schedule put it
    /// (`enable` is not a way to try an endpoint sooner).
    pub async fn enable(&self, principal: &Principal, id: u64) -> Result<Subscription, SubscribeError> {
        self.change_delivery(principal, id, |state| {
            if state.status != DeliveryStatus::Disabled {
                return false;
            }
            resume(state);
            true
        })
        .await
    }

    /// Moves the checkpoint of one of the caller's subscriptions to where
    /// `start` says (back, to replay; or forward, to skip). An event id the
    /// subscription's consumer may not see is as unknown as one the feed
    /// does not hold. A disabled subscription resumes; a failing one keeps
    /// its next retry.
    pub async fn replay(&self, principal: &Principal, id: u64, start: Start) -> Result<Subscription, SubscribeError> {
        let subscription = self.owned(principal, id).await?.subscription;
        let feed = subscription.feed();
        let action = if matches!(subscription.kind(), Kind::App { .. }) { Action::Read } else { Action::Subscribe };
        let caller = Caller::of_subscription(&subscription);
        let position = crate::read::visible_position(
            &self.feeds,
            self.pdp.as_ref(),
            &feed,
            &start,
            Some(caller),
            action,
            &Filters::default(),
        )
        .await
        .map_err(|e| match e {
            ReadError::Authorization(e) => SubscribeError::Authorization(e),
            ReadError::Storage(e) => SubscribeError::Storage(e),
            other => SubscribeError::Storage(StoreError::Transient(other.to_string())),
        })?
        .ok_or_else(|| invalid("No event with that id is in the subscription's feed."))?;
        let store_generation = self.feeds.generation().unwrap_or_default();
        self.change_delivery(principal, id, move |state| {
            state.checkpoint = position;
            state.store_generation = store_generation;
            state.oldest_pending = None;
            if state.status == DeliveryStatus::Disabled {
                resume(state);
            }
            true
        })
        .await
    }

    /// Changes the delivery state as its owner (when `edit` says it
    /// changed it); a new generation, so that the deliverer, wherever it
    /// runs, starts again from it.
    async fn change_delivery(
        &self,
        principal: &Principal,
        id: u64,
        edit: impl Fn(&mut DeliveryState) -> bool,
    ) -> Result<Subscription, SubscribeError> {
        let subscription = self.owned(principal, id).await?.subscription;
        for _ in 0..10 {
            let new = DeliveryState::starting_in(subscription.starts_at, self.feeds.generation().unwrap_or_default());
            let (mut state, etag) = self.deliveries.state_or(id, new).await?;
            if !edit(&mut state) {
                return Ok(subscription);
            }
            state.generation += 1;
            if let Changed::Done(_) = self.deliveries.write(id, &state, &etag).await? {
                (self.changed)(id);
                return Ok(subscription);
            }
        }
        Err(SubscribeError::Storage(StoreError::Transient("the delivery state kept changing".into())))
    }

    /// Changes one of the caller's subscriptions (when `edit` says it
    /// changed it), guarded by its ETag.
    async fn change(
        &self,
        principal: &Principal,
        id: u64,
        edit: impl Fn(&mut Subscription) -> bool,
    ) -> Result<Subscription, SubscribeError> {
        for _ in 0..10 {
            let stored = self.owned(principal, id).await?;
            let mut next = stored.subscription.clone();
            if !edit(&mut next) {
                return Ok(stored.subscription);
            }
            if let Changed::Done(done) = self.store.replace(&stored, next).await? {
                (self.changed)(id);
                return Ok(done.subscription);
            }
        }
        Err(SubscribeError::Storage(StoreError::Transient("the subscription kept changing".into())))
    }
}

/// A disabled subscription, pushed again from its checkpoint: the schedule
/// starts over (it ran out to get here).
fn resume(state: &mut DeliveryState) {
    state.status = DeliveryStatus::Active;
    state.failures = 0;
    state.next_retry_ms = None;
    state.last_error = None;
}
