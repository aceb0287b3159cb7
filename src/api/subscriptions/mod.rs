//! Subscriptions over HTTP, as Altinn's clients call them:
//! `POST`/`GET /events/api/v1/subscriptions`, `GET`/`DELETE .../{id}`, and
//! ours: `POST .../{id}/validate`, `POST .../{id}/secret/rotate`,
//! `POST .../{id}/enable`, `POST .../{id}/replay`,
//! `GET .../{id}/deliveries`. The subscriptions use case does the work
//! (and tells the deliverers); the bodies the handlers take and answer are
//! in `bodies.rs`. [`routes`] registers the handlers with their operations
//! in the document.

mod bodies;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{ApiPath, JsonBody};
use super::paging::start;
use super::routes::{
    SUBSCRIPTION, SUBSCRIPTION_DELIVERIES, SUBSCRIPTION_ENABLE, SUBSCRIPTION_LOCATION, SUBSCRIPTION_REPLAY,
    SUBSCRIPTION_ROTATE, SUBSCRIPTION_VALIDATE, SUBSCRIPTIONS,
};
use super::schema::{add_rules, any_of_required, one_of_required};
use super::state::AppState;
use crate::domain::Principal;
use crate::domain::subscription::Subscription;
use bodies::{
    DeliveryAttempt, DeliveryList, ReplayRequest, SubscriptionBody, SubscriptionList, SubscriptionView,
    SubscriptionWithSecret,
};

/// The subscription endpoints, with their operations.
pub fn routes() -> OpenApiRouter<AppState> {
    let mut routes = OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, delete))
        .routes(routes!(get_singular, delete_singular))
        .routes(routes!(validate))
        .routes(routes!(rotate_secret))
        .routes(routes!(enable))
        .routes(routes!(replay))
        .routes(routes!(deliveries));
    let doc = routes.get_openapi_mut();
    link_ids(doc);
    // What the creation rules and `ReplayRequest::parse` require, beyond
    // each member's own form.
    add_rules(doc, "SubscriptionRequest", [any_of_required(&["resourceFilter", "sourceFilter"])]);
    add_rules(doc, "ReplayRequest", [one_of_required(&["after", "from"])]);
    routes
}

/// OpenAPI links that hand the `id` of a subscription just created to every
/// operation on one: a client (and the contract fuzzer) follows them with
/// real ids.
fn link_ids(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::Link;
    const ON_ONE: [&str; 9] = [
        "getSubscription",
        "getSubscriptionAtLocation",
        "validateSubscription",
        "rotateSubscriptionSecret",
        "enableSubscription",
        "replaySubscription",
        "listDeliveries",
        "deleteSubscription",
        "deleteSubscriptionAtLocation",
    ];
    let created = doc.paths.paths.get_mut(SUBSCRIPTIONS).and_then(|item| item.post.as_mut());
    let Some(RefOr::T(response)) = created.and_then(|op| op.responses.responses.get_mut("201")) else { return };
    for target in ON_ONE {
        let link = Link::builder().operation_id(target).parameter("id", "$response.body#/id").build();
        response.links.insert(target.to_owned(), RefOr::T(link));
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
    // In the store generation the checkpoint is a position of (until its
    // deliverer has gone on in a new one, such a cursor is refused as stale).
    let checkpoint =
        super::paging::seal_in(state, &subscription.feed(), delivery.checkpoint, delivery.store_generation)?;
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
    params(("id" = u64, Path, example = 1, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 2, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 1, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 1, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 1, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 1, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 1, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 1, description = "The subscription id.")),
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
    params(("id" = u64, Path, example = 3, description = "The subscription id.")),
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
