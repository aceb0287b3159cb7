//! Subscriptions over HTTP, as Altinn's clients call them:
//! `POST`/`GET /events/api/v1/subscriptions`, `GET`/`DELETE .../{id}`, and
//! ours: `POST .../{id}/validate`, `POST .../{id}/secret/rotate`,
//! `POST .../{id}/enable`, `POST .../{id}/replay`,
//! `GET .../{id}/deliveries`. The subscriptions use case does the work
//! (and tells the deliverers). The bodies they take and answer are the
//! types below: the JSON Altinn's clients know (camelCase, nulls left out
//! where Altinn leaves them out, an integer `id`), made from the domain's
//! subscription and its delivery state. [`routes`] registers the handlers
//! with their operations in the document.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{ApiPath, JsonBody};
use super::paging::start;
use super::routes::{
    SUBSCRIPTION, SUBSCRIPTION_DELIVERIES, SUBSCRIPTION_ENABLE, SUBSCRIPTION_LOCATION, SUBSCRIPTION_REPLAY,
    SUBSCRIPTION_ROTATE, SUBSCRIPTION_VALIDATE, SUBSCRIPTIONS,
};
use super::state::AppState;
use crate::domain::Principal;
use crate::domain::query::{After, parse_time};
use crate::domain::subscription::{
    self as domain, DeliveryState, DeliveryStatus, Subscription, SubscriptionFilters, ValidationStatus,
};

/// The subscription endpoints, with their operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, delete))
        .routes(routes!(get_singular, delete_singular))
        .routes(routes!(validate))
        .routes(routes!(rotate_secret))
        .routes(routes!(enable))
        .routes(routes!(replay))
        .routes(routes!(deliveries))
}

/// `POST /events/api/v1/subscriptions`, as Altinn's clients send it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
#[schema(as = SubscriptionRequest)]
struct SubscriptionBody {
    /// Where the events are pushed: an absolute `https` URL (in dev mode
    /// also `http`). `endpoint` is accepted too.
    #[serde(alias = "endpoint")]
    #[schema(example = "https://example.com/events")]
    end_point: Option<String>,
    source_filter: Option<String>,
    resource_filter: Option<String>,
    subject_filter: Option<String>,
    alternative_subject_filter: Option<String>,
    type_filter: Option<String>,
    include_subunits: bool,
}

impl From<SubscriptionBody> for domain::SubscriptionRequest {
    fn from(b: SubscriptionBody) -> Self {
        Self {
            end_point: b.end_point,
            source_filter: b.source_filter,
            resource_filter: b.resource_filter,
            subject_filter: b.subject_filter,
            alternative_subject_filter: b.alternative_subject_filter,
            type_filter: b.type_filter,
            include_subunits: b.include_subunits,
        }
    }
}

/// What a subscription follows: its filters, after the creation rules.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SubscriptionFilters)]
struct FiltersView {
    #[serde(skip_serializing_if = "Option::is_none")]
    source_filter: Option<String>,
    resource_filter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alternative_subject_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    type_filter: Option<String>,
    include_subunits: bool,
}

impl From<&SubscriptionFilters> for FiltersView {
    fn from(f: &SubscriptionFilters) -> Self {
        Self {
            source_filter: f.source_filter.clone(),
            resource_filter: f.resource_filter.clone(),
            subject_filter: f.subject_filter.clone(),
            alternative_subject_filter: f.alternative_subject_filter.clone(),
            type_filter: f.type_filter.clone(),
            include_subunits: f.include_subunits,
        }
    }
}

/// A subscription as its owner sees it (`GET /subscriptions/{id}`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SubscriptionView {
    id: u64,
    end_point: String,
    #[serde(flatten)]
    filters: FiltersView,
    consumer: String,
    created_by: String,
    created: String,
    validated: bool,
    /// Ours: `validating` or (validation) `failing` until validated; then
    /// how delivery stands: `active`, `failing`, `disabled`.
    #[schema(value_type = String, pattern = "^(validating|failing|active|disabled)$")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Ours: the checkpoint (a cursor of the feed), the oldest event not
    /// delivered yet, failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliveryView>,
}

impl SubscriptionView {
    /// The view of `subscription` before its delivery is looked up: how
    /// validation of its endpoint stands.
    fn of(subscription: &Subscription) -> Self {
        let validation = &subscription.validation;
        Self {
            id: subscription.id,
            end_point: subscription.end_point.clone(),
            filters: (&subscription.filters).into(),
            consumer: subscription.consumer.clone(),
            created_by: subscription.created_by.clone(),
            created: subscription.created.clone(),
            validated: validation.status == ValidationStatus::Active,
            status: match validation.status {
                ValidationStatus::Validating => "validating",
                ValidationStatus::Active => "active",
                ValidationStatus::Failing => "failing",
            },
            last_error: validation.last_error.clone(),
            delivery: None,
        }
    }

    /// The view with how delivery stands: its status and last error (once
    /// validated), the checkpoint (a cursor of the feed) and the time of the
    /// oldest event it has yet to deliver.
    fn with_delivery(subscription: &Subscription, delivery: &DeliveryState, checkpoint: String) -> Self {
        let mut view = Self::of(subscription);
        if view.validated {
            view.status = match delivery.status {
                DeliveryStatus::Active => "active",
                DeliveryStatus::Failing => "failing",
                DeliveryStatus::Disabled => "disabled",
            };
            view.last_error = delivery.last_error.clone();
        }
        view.delivery = Some(DeliveryView {
            checkpoint,
            oldest_pending: delivery.oldest_pending.clone(),
            failures: delivery.failures,
            next_retry: delivery.next_retry_ms.and_then(|ms| {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .ok()
                    .map(crate::domain::cloud_event::format_time)
            }),
        });
        view
    }
}

/// How far delivery of a subscription has come, as its owner sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeliveryView {
    /// A cursor of the feed: everything before it is delivered (or was not
    /// permitted). `replay` takes it as `after`.
    checkpoint: String,
    /// The `time` of the oldest event not delivered yet (it is being pushed
    /// or retried), or null when delivery had caught up; only events the
    /// consumer is permitted count. Stored at most `delivery.flush_ms`
    /// apart, so it may lag a second behind.
    oldest_pending: Option<String>,
    /// Failed attempts of the event at the checkpoint.
    failures: u32,
    /// When the next attempt is due, or null.
    next_retry: Option<String>,
}

/// A subscription as created or rotated: the view and, once, its secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SubscriptionWithSecret {
    #[serde(flatten)]
    subscription: SubscriptionView,
    /// The Standard Webhooks signing secret (`whsec_...`). Shown only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// `GET /subscriptions`.
#[derive(Serialize, ToSchema)]
struct SubscriptionList {
    count: usize,
    subscriptions: Vec<SubscriptionView>,
}

/// One push attempt, for the owner to see.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeliveryAttempt {
    time: String,
    event_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<&domain::DeliveryAttempt> for DeliveryAttempt {
    fn from(a: &domain::DeliveryAttempt) -> Self {
        Self {
            time: a.time.clone(),
            event_id: a.event_id.clone(),
            status: a.status,
            latency_ms: a.latency_ms,
            error: a.error.clone(),
        }
    }
}

/// `GET /subscriptions/{id}/deliveries`: recent push attempts, newest first.
#[derive(Serialize, ToSchema)]
struct DeliveryList {
    count: usize,
    deliveries: Vec<DeliveryAttempt>,
}

/// `POST .../subscriptions/{id}/replay`: where delivery continues, as a
/// feed read would start (`after`: `0`, a cursor of the subscription's feed
/// or an event id; or `from`: a time with offset).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplayRequest {
    after: Option<String>,
    from: Option<String>,
}

impl ReplayRequest {
    /// `after` and `from` checked: exactly one of them.
    fn parse(&self) -> Result<(Option<After>, Option<String>), String> {
        let after = self.after.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let from = parse_time(self.from.as_deref().map(str::trim).filter(|s| !s.is_empty()), "from")?;
        match (after, from) {
            (Some(after), None) => Ok((Some(After::parse(after)), None)),
            (None, Some(from)) => Ok((None, Some(from))),
            _ => Err("Give either 'after' (0, a cursor or an event id) or 'from' (a time with timezone).".into()),
        }
    }
}

fn id_of(raw: &str) -> Result<u64, ApiError> {
    // Altinn's route takes an integer; anything else is no subscription.
    raw.parse().map_err(|_| ApiError::NotFound("No subscription with that id.".into()))
}

/// `POST /events/api/v1/subscriptions`: `201` with `Location`
/// (`/events/api/v1/subscription/{id}`, as Altinn writes it) and the
/// subscription; a new one carries its signing `secret`, shown only here.
#[utoipa::path(
    post, path = SUBSCRIPTIONS, tag = "Subscriptions", operation_id = "createSubscription",
    summary = "Subscribe an endpoint to a feed",
    request_body(content = SubscriptionBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; validation of the endpoint starts. The secret is shown only here.", body = SubscriptionWithSecret, headers(("Location" = String, description = "`/events/api/v1/subscription/{id}`."))),
        (status = 400, description = "Not a valid subscription (Altinn's texts).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not permitted to subscribe to this resource or subject; or the AltinnStudioRuntime cookie without same-origin proof.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared JSON (`application/json`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    // A fixed text: serde's could quote an identity number from a filter.
    let request: SubscriptionBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::BadRequest(
            "The body is not a valid subscription: expected a JSON object with endPoint, sourceFilter, resourceFilter, subjectFilter, alternativeSubjectFilter, typeFilter, includeSubunits.".into(),
        )
    })?;
    let created = state.subscriptions.create(&principal, request.into()).await?;
    let body = SubscriptionWithSecret {
        subscription: SubscriptionView::of(&created.subscription),
        secret: created.secret.as_ref().map(|s| s.expose_secret().to_owned()),
    };
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    let location = format!("/events/api/v1/subscription/{}", created.subscription.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The owner's view of `subscription` with how its delivery stands: the
/// checkpoint as a cursor of its feed (usable as `after` of a query or a
/// replay), the oldest event not delivered yet, failures.
async fn view_of(state: &AppState, subscription: &Subscription) -> Result<SubscriptionView, ApiError> {
    let delivery = state.subscriptions.delivery_of(subscription).await?;
    let checkpoint = state
        .cursors
        .seal(&subscription.feed(), delivery.checkpoint)
        .map_err(|e| ApiError::unavailable("cursor keys", e))?;
    Ok(SubscriptionView::with_delivery(subscription, &delivery, checkpoint))
}

/// `GET /events/api/v1/subscriptions`: the caller's own.
#[utoipa::path(
    get, path = SUBSCRIPTIONS, tag = "Subscriptions", operation_id = "listSubscriptions",
    summary = "Your subscriptions",
    responses((status = 200, description = "Every subscription of the caller.", body = SubscriptionList)),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    use futures::{StreamExt, TryStreamExt};
    let owned = state.subscriptions.list(&principal).await?;
    let views = owned.into_iter().map(|s| {
        let state = state.clone();
        async move { view_of(&state, &s).await }
    });
    let subscriptions: Vec<SubscriptionView> = futures::stream::iter(views).buffered(8).try_collect().await?;
    Ok(axum::Json(SubscriptionList { count: subscriptions.len(), subscriptions }).into_response())
}

/// `GET /events/api/v1/subscriptions/{id}`: the owner's view.
#[utoipa::path(
    get, path = SUBSCRIPTION, tag = "Subscriptions", operation_id = "getSubscription",
    summary = "One subscription, with how its delivery stands",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "The subscription.", body = SubscriptionView), (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let subscription = state.subscriptions.get(&principal, id_of(&id)?).await?;
    Ok(axum::Json(view_of(&state, &subscription).await?).into_response())
}

/// `DELETE /events/api/v1/subscriptions/{id}`: `200`, nothing more is pushed.
#[utoipa::path(
    delete, path = SUBSCRIPTION, tag = "Subscriptions", operation_id = "deleteSubscription",
    summary = "Delete a subscription",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "Deleted; nothing more is pushed."), (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = id_of(&id)?;
    state.subscriptions.delete(&principal, id).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /events/api/v1/subscriptions/{id}/validate`: validate again, now.
#[utoipa::path(
    post, path = SUBSCRIPTION_VALIDATE, tag = "Subscriptions", operation_id = "validateSubscription",
    summary = "Run endpoint validation again",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 202, description = "Validation started.", body = SubscriptionView), (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn validate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let subscription = state.subscriptions.revalidate(&principal, id_of(&id)?).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(view_of(&state, &subscription).await?)).into_response())
}

/// `POST /events/api/v1/subscriptions/{id}/enable`: a disabled (or
/// failing) subscription is pushed again from its checkpoint, now.
#[utoipa::path(
    post, path = SUBSCRIPTION_ENABLE, tag = "Subscriptions", operation_id = "enableSubscription",
    summary = "Resume a disabled subscription from its checkpoint",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "Delivery resumes.", body = SubscriptionView), (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn enable(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let subscription = state.subscriptions.enable(&principal, id_of(&id)?).await?;
    Ok(axum::Json(view_of(&state, &subscription).await?).into_response())
}

/// `POST /events/api/v1/subscriptions/{id}/replay` with `{"after": ...}`
/// (`0`, a cursor of the subscription's feed, an event id) or
/// `{"from": time}`: delivery continues from there.
#[utoipa::path(
    post, path = SUBSCRIPTION_REPLAY, tag = "Subscriptions", operation_id = "replaySubscription",
    summary = "Deliver again from a point of the feed",
    params(("id" = i64, Path, description = "The subscription id.")),
    request_body(content = ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Delivery continues from there.", body = SubscriptionView),
        (status = 400, description = "Neither or both of `after` and `from`, or one that is not valid.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared JSON (`application/json`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: ReplayRequest = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("The body must be a JSON object with 'after' or 'from'.".into()))?;
    let (after, from) = request.parse().map_err(ApiError::BadRequest)?;
    let id = id_of(&id)?;
    let subscription = state.subscriptions.get(&principal, id).await?;
    let start = start(&state, &subscription.feed(), after, from)?;
    let subscription = state.subscriptions.replay(&principal, id, start).await?;
    Ok(axum::Json(view_of(&state, &subscription).await?).into_response())
}

/// `GET /events/api/v1/subscriptions/{id}/deliveries`: the recent push
/// attempts, newest first.
#[utoipa::path(
    get, path = SUBSCRIPTION_DELIVERIES, tag = "Subscriptions", operation_id = "listDeliveries",
    summary = "Recent push attempts, newest first",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "The attempts.", body = DeliveryList), (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (_, delivery) = state.subscriptions.delivery(&principal, id_of(&id)?).await?;
    let deliveries: Vec<DeliveryAttempt> = delivery.attempts.iter().rev().map(DeliveryAttempt::from).collect();
    Ok(axum::Json(DeliveryList { count: deliveries.len(), deliveries }).into_response())
}

/// `POST /events/api/v1/subscriptions/{id}/secret/rotate`: a new signing
/// secret, shown once; the old one keeps signing for 24 hours.
#[utoipa::path(
    post, path = SUBSCRIPTION_ROTATE, tag = "Subscriptions", operation_id = "rotateSubscriptionSecret",
    summary = "A new signing secret; the old one signs too for 24 hours",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "The subscription and its new secret (shown only here).", body = SubscriptionWithSecret), (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (subscription, secret) = state.subscriptions.rotate_secret(&principal, id_of(&id)?).await?;
    let body = SubscriptionWithSecret {
        subscription: view_of(&state, &subscription).await?,
        secret: Some(secret.expose_secret().to_owned()),
    };
    Ok(axum::Json(body).into_response())
}

#[utoipa::path(
    get, path = SUBSCRIPTION_LOCATION, tag = "Subscriptions", operation_id = "getSubscriptionAtLocation",
    summary = "One subscription, where `Location` points (Altinn's singular path)",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses(
        (status = 200, description = "The subscription.", body = SubscriptionView),
        (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn get_singular(
    state: State<AppState>,
    principal: Principal,
    id: ApiPath<String>,
) -> Result<Response, ApiError> {
    get(state, principal, id).await
}

#[utoipa::path(
    delete, path = SUBSCRIPTION_LOCATION, tag = "Subscriptions", operation_id = "deleteSubscriptionAtLocation",
    summary = "Delete a subscription, where `Location` points (Altinn's singular path)",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses(
        (status = 200, description = "Deleted; nothing more is pushed."),
        (status = 404, description = "No subscription with that id.", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn delete_singular(
    state: State<AppState>,
    principal: Principal,
    id: ApiPath<String>,
) -> Result<Response, ApiError> {
    delete(state, principal, id).await
}
