//! Subscriptions over HTTP, as Altinn's clients call them:
//! `POST`/`GET /events/api/v1/subscriptions`, `GET`/`DELETE .../{id}`, and
//! ours: `POST .../{id}/validate`, `POST .../{id}/secret/rotate`,
//! `POST .../{id}/enable`, `POST .../{id}/replay`,
//! `GET .../{id}/deliveries`. The subscriptions use case does the work
//! (and tells the deliverers).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::ApiPath;
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
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
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
/// replay), events behind, failures.
async fn view_of(state: &AppState, subscription: &Subscription) -> Result<Value, ApiError> {
    let (delivery, behind) = state.subscriptions.delivery_of(subscription).await?;
    let checkpoint = state
        .cursors
        .seal(&subscription.feed(), delivery.checkpoint)
        .map_err(|e| ApiError::unavailable("cursor keys", e))?;
    Ok(json_of(subscription.view_with(&delivery, checkpoint, behind)))
}

/// `GET /events/api/v1/subscriptions`: the caller's own.
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
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let subscription = state.subscriptions.get(&principal, id_of(&id)?).await?;
    Ok(axum::Json(view_of(&state, &subscription).await?).into_response())
}

/// `DELETE /events/api/v1/subscriptions/{id}`: `200`, nothing more is pushed.
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
pub async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
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
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (_, delivery, _) = state.subscriptions.delivery(&principal, id_of(&id)?).await?;
    let attempts: Vec<Value> = delivery.attempts.iter().rev().map(json_of).collect();
    Ok(axum::Json(json!({"count": attempts.len(), "deliveries": attempts})).into_response())
}

/// `POST /events/api/v1/subscriptions/{id}/secret/rotate`: a new signing
/// secret, shown once; the old one keeps signing for 24 hours.
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
