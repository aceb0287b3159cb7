//! The one error type at the HTTP edge, and every conversion into it.
//!
//! Policy: every failure a client sees is an `application/problem+json`
//! document (RFC 9457) with a stable `type` and `title`. 4xx carry Altinn's
//! `detail` texts (or ours, in its style) and never echo a token, a key or
//! an identity number. 5xx are opaque: the detail names the dependency at
//! most, and the whole cause chain is logged once, here, inside the
//! request's span. Lower layers return their own error enums; only this
//! file decides which status each one is.

use std::error::Error as StdError;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::authz::PdpError;
use crate::domain::CloudEventError;
use crate::feeds::StoreError;
use crate::publish::PublishError;
use crate::read::{NoSlot, ReadError};
use crate::register::RegisterError;
use crate::subscribe::SubscribeError;

pub const PROBLEM_JSON: &str = "application/problem+json";

type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A cursor sealed in another generation of the store (after a restore
    /// or a failover that lost writes): a 400 of its own kind, whose detail
    /// says how to go on.
    #[error("cursor of another store generation: {0}")]
    StaleCursor(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("request body too slow")]
    RequestTimeout,
    #[error("too many requests")]
    TooManyRequests { retry_after_seconds: u64 },
    /// A dependency (Cosmos, the PDP, Register) failed: 503, fail closed.
    #[error("{dependency} unavailable")]
    Unavailable {
        dependency: &'static str,
        #[source]
        source: BoxError,
    },
    /// This instance has more work than it takes at once: 503 with
    /// `Retry-After`, refused before anything was stored.
    #[error("overloaded")]
    Overloaded,
    /// This instance holds as many long-polling requests as it may: 503
    /// with `Retry-After`.
    #[error("long-polling capacity reached")]
    WaitersFull,
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// An RFC 9457 problem document: every error this service answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// A stable URI per kind of problem.
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    /// Altinn's text for 4xx; at most the failing dependency for 5xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

impl ApiError {
    pub fn unavailable(dependency: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable { dependency, source: source.into() }
    }

    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self::Internal(source.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::StaleCursor(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } | Self::Overloaded | Self::WaitersFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadRequest(_) => ("https://altinn.no/events/problems/bad-request", "Bad request"),
            Self::StaleCursor(_) => (
                "https://altinn.no/events/problems/cursor-of-another-store-generation",
                "Cursor of another store generation",
            ),
            Self::Unauthorized(_) => ("https://altinn.no/events/problems/unauthorized", "Unauthorized"),
            Self::Forbidden(_) => ("https://altinn.no/events/problems/forbidden", "Forbidden"),
            Self::NotFound(_) => ("https://altinn.no/events/problems/not-found", "Not found"),
            Self::Conflict(_) => ("https://altinn.no/events/problems/conflict", "Conflict"),
            Self::UnsupportedMediaType(_) => {
                ("https://altinn.no/events/problems/unsupported-media-type", "Unsupported media type")
            }
            Self::PayloadTooLarge => ("https://altinn.no/events/problems/payload-too-large", "Payload too large"),
            Self::RequestTimeout => ("https://altinn.no/events/problems/request-timeout", "Request timeout"),
            Self::TooManyRequests { .. } => {
                ("https://altinn.no/events/problems/too-many-requests", "Too many requests")
            }
            Self::Unavailable { .. } => {
                ("https://altinn.no/events/problems/service-unavailable", "Service unavailable")
            }
            Self::Overloaded | Self::WaitersFull => ("https://altinn.no/events/problems/overloaded", "Overloaded"),
            Self::Internal(_) => ("https://altinn.no/events/problems/internal", "Internal server error"),
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Self::BadRequest(d)
            | Self::StaleCursor(d)
            | Self::Unauthorized(d)
            | Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::Conflict(d)
            | Self::UnsupportedMediaType(d) => Some(d.clone()),
            Self::PayloadTooLarge => Some("The request body is larger than this service accepts.".into()),
            Self::RequestTimeout => Some("The request body did not arrive in time.".into()),
            Self::TooManyRequests { .. } => Some("Too many requests; retry later.".into()),
            // Names the dependency, never the cause: 5xx bodies stay opaque.
            Self::Unavailable { dependency, .. } => Some(format!("A dependency is unavailable: {dependency}.")),
            Self::Overloaded => Some(
                "This instance has more work than it can take now; nothing was stored. Retry after a moment.".into(),
            ),
            Self::WaitersFull => Some(
                "This instance holds as many waiting requests as it can; retry after a moment, or ask without 'wait'."
                    .into(),
            ),
            Self::Internal(_) => None,
        }
    }
}

/// Renders a problem document; used by `ApiError` and by the layers that
/// answer before a handler runs (body limit, fallback).
pub fn problem_response(status: StatusCode, kind: &str, title: &str, detail: Option<&str>) -> Response {
    let body = Problem { kind, title, status: status.as_u16(), detail };
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // Logged once, inside the request span, with the whole chain.
            tracing::error!(error.chain = %crate::telemetry::error_chain(&self), "request failed");
        } else {
            tracing::debug!(error = %self, "request rejected");
        }
        let (kind, title) = self.kind_and_title();
        let detail = self.detail();
        let mut resp = problem_response(status, kind, title, detail.as_deref());
        if let Self::TooManyRequests { retry_after_seconds } = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if matches!(self, Self::Overloaded | Self::WaitersFull) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rej: JsonRejection) -> Self {
        match rej {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("Expected request with `Content-Type: application/json`".into())
            }
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rej: axum::extract::rejection::BytesRejection) -> Self {
        let mut cause: Option<&(dyn StdError + 'static)> = Some(&rej);
        while let Some(e) = cause {
            if e.is::<super::server::BodyTimedOut>() {
                return Self::RequestTimeout;
            }
            cause = e.source();
        }
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::BadRequest(rej.body_text())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdTaken { .. } => {
                Self::Conflict("An event with this id and another source is already registered.".into())
            }
            StoreError::Rejected(_) => Self::BadRequest("The event could not be stored.".into()),
            StoreError::Overloaded => Self::Overloaded,
            other => Self::unavailable("storage", other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => Self::Unauthorized("Missing bearer token or AltinnStudioRuntime cookie.".into()),
            AuthError::Invalid(_) => Self::Unauthorized("The token is not valid.".into()),
            AuthError::KeysUnavailable(src) => Self::unavailable("authentication", src),
        }
    }
}

impl From<CloudEventError> for ApiError {
    fn from(e: CloudEventError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Storage(e) => e.into(),
            ReadError::Register(RegisterError::Busy) => Self::Overloaded,
            ReadError::Authorization(PdpError::Busy) => Self::Overloaded,
            ReadError::Authorization(e) => Self::unavailable("authorization", e),
            ReadError::UnknownParty => Self::NotFound("No party found for the given unit or person.".into()),
            ReadError::PartyRefused(_) => Self::BadRequest("The given unit or person is not valid.".into()),
            ReadError::Register(e) => Self::unavailable("register", e),
            ReadError::TooManyWaiters(NoSlot::Full) => Self::WaitersFull,
            ReadError::TooManyWaiters(NoSlot::ShareUsed) => Self::TooManyRequests { retry_after_seconds: 1 },
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Invalid(text) => Self::BadRequest(text),
            SubscribeError::Forbidden(text) => Self::Forbidden(text),
            SubscribeError::NotFound => Self::NotFound("No subscription with that id.".into()),
            SubscribeError::NotOwner => Self::Forbidden("The subscription belongs to another consumer.".into()),
            SubscribeError::Storage(e) => e.into(),
            SubscribeError::Authorization(PdpError::Busy) => Self::Overloaded,
            SubscribeError::Authorization(e) => Self::unavailable("authorization", e),
            SubscribeError::Register(e) => Self::unavailable("register", e),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(e) => e.into(),
            e @ PublishError::NotTheAppsSource { .. } => Self::Unauthorized(e.to_string()),
            e @ PublishError::Denied { .. } => Self::Forbidden(e.to_string()),
            PublishError::Authorization(PdpError::Busy) => Self::Overloaded,
            PublishError::Authorization(e) => Self::unavailable("authorization", e),
            PublishError::Storage(e) => e.into(),
            PublishError::Overloaded => Self::Overloaded,
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rej: axum::extract::rejection::PathRejection) -> Self {
        Self::BadRequest(format!("The path is not valid: {}", rej.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rej: QueryRejection) -> Self {
        Self::BadRequest(rej.body_text())
    }
}

/// `axum::Json` whose rejections are problem documents.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejections are problem documents.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
