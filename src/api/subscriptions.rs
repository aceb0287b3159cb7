//! Subscriptions over HTTP, as Altinn's clients call them:
//! `POST`/`GET /events/api/v1/subscriptions`, `GET`/`DELETE .../{id}`, and
//! ours: `POST .../{id}/validate`, `POST .../{id}/secret/rotate`,
//! `POST .../{id}/enable`, `POST .../{id}/replay`,
//! `GET .../{id}/deliveries`. The subscriptions use case does the work
//! (and tells the deliverers).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiPath, JsonBody};
use super::state::AppState;
use crate::domain::Principal;
use crate::domain::subscription::{ReplayRequest, Subscription, SubscriptionRequest};

fn id_of(raw: &str) -> Result<u64, ApiError> {
    // Altinn's route takes an integer; anything else is no subscription.
    raw.parse().map_err(|_| ApiError::NotFound("No subscription with that id.".into()))
}

fn json_of(view: impl serde::Serialize) -> Value {
    serde_json::to_value(view).unwrap_or_default()
}

/// `POST /events/api/v1/subscriptions`: `201` with `Location`
/// (`/events/api/v1/subscription/{id}`, as Altinn writes it) and the
/// subscription; a new one carries its signing `secret`, shown only here.
#[utoipa::path(
    post, path = "/events/api/v1/subscriptions", tag = "Subscriptions", operation_id = "createSubscription",
    summary = "Subscribe an endpoint to a feed",
    request_body(content = crate::domain::subscription::SubscriptionRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; validation of the endpoint starts. The secret is shown only here.", body = crate::api::openapi::SubscriptionWithSecret, headers(("Location" = String, description = "`/events/api/v1/subscription/{id}`."))),
        (status = 400, description = "Not a valid subscription (Altinn's texts).", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not permitted to subscribe to this resource or subject; or the AltinnStudioRuntime cookie without same-origin proof.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared JSON (`application/json`).", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    // A fixed text: serde's could quote an identity number from a filter.
    let request: SubscriptionRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::BadRequest(
            "The body is not a valid subscription: expected a JSON object with endPoint, sourceFilter, resourceFilter, subjectFilter, alternativeSubjectFilter, typeFilter, includeSubunits.".into(),
        )
    })?;
    let created = state.subscriptions.create(&principal, request).await?;
    let mut body = json_of(created.subscription.view());
    if let (Some(secret), Some(map)) = (&created.secret, body.as_object_mut()) {
        map.insert("secret".into(), Value::String(secret.expose_secret().to_owned()));
    }
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
async fn view_of(state: &AppState, subscription: &Subscription) -> Result<Value, ApiError> {
    let delivery = state.subscriptions.delivery_of(subscription).await?;
    let checkpoint = state
        .cursors
        .seal(&subscription.feed(), delivery.checkpoint)
        .map_err(|e| ApiError::unavailable("cursor keys", e))?;
    Ok(json_of(subscription.view_with(&delivery, checkpoint)))
}

/// `GET /events/api/v1/subscriptions`: the caller's own.
#[utoipa::path(
    get, path = "/events/api/v1/subscriptions", tag = "Subscriptions", operation_id = "listSubscriptions",
    summary = "Your subscriptions",
    responses((status = 200, description = "Every subscription of the caller.", body = crate::api::openapi::SubscriptionList)),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    use futures::{StreamExt, TryStreamExt};
    let owned = state.subscriptions.list(&principal).await?;
    let views = owned.into_iter().map(|s| {
        let state = state.clone();
        async move { view_of(&state, &s).await }
    });
    let subscriptions: Vec<Value> = futures::stream::iter(views).buffered(8).try_collect().await?;
    Ok(axum::Json(json!({"count": subscriptions.len(), "subscriptions": subscriptions})).into_response())
}

/// `GET /events/api/v1/subscriptions/{id}`: the owner's view.
#[utoipa::path(
    get, path = "/events/api/v1/subscriptions/{id}", tag = "Subscriptions", operation_id = "getSubscription",
    summary = "One subscription, with how its delivery stands",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "The subscription.", body = crate::domain::subscription::SubscriptionView), (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json")),
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
    delete, path = "/events/api/v1/subscriptions/{id}", tag = "Subscriptions", operation_id = "deleteSubscription",
    summary = "Delete a subscription",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "Deleted; nothing more is pushed."), (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json")),
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
    post, path = "/events/api/v1/subscriptions/{id}/validate", tag = "Subscriptions", operation_id = "validateSubscription",
    summary = "Run endpoint validation again",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 202, description = "Validation started.", body = crate::domain::subscription::SubscriptionView), (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json")),
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
    post, path = "/events/api/v1/subscriptions/{id}/enable", tag = "Subscriptions", operation_id = "enableSubscription",
    summary = "Resume a disabled subscription from its checkpoint",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "Delivery resumes.", body = crate::domain::subscription::SubscriptionView), (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json")),
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
    post, path = "/events/api/v1/subscriptions/{id}/replay", tag = "Subscriptions", operation_id = "replaySubscription",
    summary = "Deliver again from a point of the feed",
    params(("id" = i64, Path, description = "The subscription id.")),
    request_body(content = crate::domain::subscription::ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Delivery continues from there.", body = crate::domain::subscription::SubscriptionView),
        (status = 400, description = "Neither or both of `after` and `from`, or one that is not valid.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared JSON (`application/json`).", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
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
    let start = super::query::start(&state, &subscription.feed(), after, from)?;
    let subscription = state.subscriptions.replay(&principal, id, start).await?;
    Ok(axum::Json(view_of(&state, &subscription).await?).into_response())
}

/// `GET /events/api/v1/subscriptions/{id}/deliveries`: the recent push
/// attempts, newest first.
#[utoipa::path(
    get, path = "/events/api/v1/subscriptions/{id}/deliveries", tag = "Subscriptions", operation_id = "listDeliveries",
    summary = "Recent push attempts, newest first",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "The attempts.", body = crate::api::openapi::DeliveryList), (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (_, delivery) = state.subscriptions.delivery(&principal, id_of(&id)?).await?;
    let attempts: Vec<Value> = delivery.attempts.iter().rev().map(json_of).collect();
    Ok(axum::Json(json!({"count": attempts.len(), "deliveries": attempts})).into_response())
}

/// `POST /events/api/v1/subscriptions/{id}/secret/rotate`: a new signing
/// secret, shown once; the old one keeps signing for 24 hours.
#[utoipa::path(
    post, path = "/events/api/v1/subscriptions/{id}/secret/rotate", tag = "Subscriptions", operation_id = "rotateSubscriptionSecret",
    summary = "A new signing secret; the old one signs too for 24 hours",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses((status = 200, description = "The subscription and its new secret (shown only here).", body = crate::api::openapi::SubscriptionWithSecret), (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json")),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (subscription, secret) = state.subscriptions.rotate_secret(&principal, id_of(&id)?).await?;
    let mut body = view_of(&state, &subscription).await?;
    if let Some(map) = body.as_object_mut() {
        map.insert("secret".into(), Value::String(secret.expose_secret().to_owned()));
    }
    Ok(axum::Json(body).into_response())
}

#[utoipa::path(
    get, path = "/events/api/v1/subscription/{id}", tag = "Subscriptions", operation_id = "getSubscriptionAtLocation",
    summary = "One subscription, where `Location` points (Altinn's singular path)",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses(
        (status = 200, description = "The subscription.", body = crate::domain::subscription::SubscriptionView),
        (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
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
    delete, path = "/events/api/v1/subscription/{id}", tag = "Subscriptions", operation_id = "deleteSubscriptionAtLocation",
    summary = "Delete a subscription, where `Location` points (Altinn's singular path)",
    params(("id" = i64, Path, description = "The subscription id.")),
    responses(
        (status = 200, description = "Deleted; nothing more is pushed."),
        (status = 404, description = "No subscription with that id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The subscription is another consumer's.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
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
