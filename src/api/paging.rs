//! Paging, as every feed read over HTTP does it (`api/query.rs`,
//! `api/instance.rs`, and a subscription's replay): where a read starts,
//! the `next` link after a page, the page as a response, and how the
//! document describes them (the page parameters, the served CloudEvent).
//!
//! Invariants it keeps:
//! - a cursor is opened only for the feed it was sealed for: an `after`
//!   that is a cursor of another feed, or altered, is a 400, never a guess;
//! - every page answered carries `next`: the same request with `after` set
//!   to a cursor sealed past the last event the page scanned, permitted or
//!   not, so a client always moves on;
//! - a page's events are served as they are stored, in feed order.

use std::borrow::Cow;

use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::error::ApiError;
use super::schema::{integer, nullable_string, param, string};
use super::state::AppState;
use crate::domain::FeedId;
use crate::domain::query::{After, MAX_WAIT_SECONDS};
use crate::read::{Page, Start};

/// What a `next` link keeps of the request's query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextQuery {
    /// Every parameter, with `after` replaced.
    Same,
    /// Only `after` (the rest of the query is in the body).
    CursorOnly,
}

/// Where a read of `feed` starts: a cursor must be one this service sealed
/// for this feed (anything else is a 400, not a guess), in the store's
/// current generation (one of another names a position that may now hold
/// other events: a 400 of its own kind saying how to go on).
pub fn start(state: &AppState, feed: &FeedId, after: Option<After>, from: Option<String>) -> Result<Start, ApiError> {
    let mut refused = None;
    let start = Start::new(after, from, |cursor| {
        let opened = state.cursors.open(feed, cursor).ok()?;
        match state.feeds.generation() {
            Some(current) if current == opened.generation => Some(opened.position),
            Some(current) => {
                refused = Some(ApiError::StaleCursor(format!(
                    "The 'after' cursor is from generation {} of this service's store, which is now at generation {current} \
                     (restored, or failed over to a copy without the newest events): its position may now hold other \
                     events. Go on with 'after' set to the id of the last event you processed, or 'from' a time.",
                    opened.generation
                )));
                None
            }
            None => {
                refused = Some(generation_unknown());
                None
            }
        }
    });
    if let Some(refused) = refused {
        return Err(refused);
    }
    start.ok_or_else(|| {
        ApiError::BadRequest("The 'after' parameter is not a cursor this service issued for this query.".into())
    })
}

fn generation_unknown() -> ApiError {
    ApiError::unavailable("cosmos", std::io::Error::other("the store's generation has not been read yet"))
}

/// A cursor for `position` in `feed`, in the store's current generation.
pub fn seal(state: &AppState, feed: &FeedId, position: u64) -> Result<String, ApiError> {
    seal_in(state, feed, position, state.feeds.generation().ok_or_else(generation_unknown)?)
}

/// A cursor for `position` in `feed`, a position of the store's `generation`.
pub fn seal_in(state: &AppState, feed: &FeedId, position: u64, generation: u32) -> Result<String, ApiError> {
    state.cursors.seal(feed, position, generation).map_err(|e| ApiError::unavailable("cursor keys", e))
}

/// The same request with `after` set to a cursor sealed for `position` in
/// `feed`, as an absolute URL; `extra` parameters (what the request said in
/// headers, so that following `next` alone continues the same query)
/// replace any of the same name.
pub fn next_link(
    state: &AppState,
    uri: &Uri,
    keep: NextQuery,
    feed: &FeedId,
    position: u64,
    extra: &[(&str, &str)],
) -> Result<String, ApiError> {
    let cursor = seal(state, feed, position)?;
    let base = state.config.platform_base().map(String::from).unwrap_or_default();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if keep == NextQuery::Same {
        for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
            let replaced = k.eq_ignore_ascii_case("after") || extra.iter().any(|(e, _)| k.eq_ignore_ascii_case(e));
            if !replaced {
                query.append_pair(&k, &v);
            }
        }
    }
    for (k, v) in extra {
        query.append_pair(k, v);
    }
    query.append_pair("after", &cursor);
    Ok(format!("{}{}?{}", base.trim_end_matches('/'), uri.path(), query.finish()))
}

/// A page as a JSON array of [`CloudEvent`]s with its `next` link.
pub fn page_response(page: Page, next: String, content_type: &'static str) -> Response {
    // The same allocation, reused: a CloudEvent is its stored value.
    let events: Vec<CloudEvent> = page.events.into_iter().map(CloudEvent).collect();
    let mut resp = axum::Json(events).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&next) {
        resp.headers_mut().insert("next", v);
    }
    resp
}

/// A stored CloudEvent 1.0 as the feeds serve it: the JSON the publisher
/// sent (extension attributes too), with the fields the service set.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct CloudEvent(pub Value);

impl PartialSchema for CloudEvent {
    fn schema() -> RefOr<Schema> {
        let mut event = ObjectBuilder::new().description(Some(
            "A stored CloudEvent 1.0 as the feeds return it: every attribute the\npublisher gave (extension \
             attributes too), with `id`, `time` and\n`resource` always set.",
        ));
        for field in ["specversion", "id", "source", "type", "time", "resource"] {
            event = event.property(field, string()).required(field);
        }
        for field in ["subject", "alternativesubject", "resourceinstance", "datacontenttype", "dataschema"] {
            event = event.property(field, nullable_string());
        }
        let data =
            ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some("Anything the publisher sent."));
        event
            .property("data", data)
            .examples([json!({
                "specversion": "1.0",
                "id": "0b6ad44f-5c7a-4f1e-93d2-7e3b6e0c3e4d",
                "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/50002108/3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11",
                "type": "app.instance.created",
                "subject": "/party/50002108",
                "resource": "urn:altinn:resource:app_ttd_apps-test",
                "resourceinstance": "50002108/3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11",
                "time": "2026-11-27T10:00:00.000000Z"
            })])
            .into()
    }
}

impl ToSchema for CloudEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CloudEvent")
    }
}

/// How a page is asked for, as every feed read takes it: `after`, `size`,
/// `wait` (query parameters, parsed by `domain::query` with Altinn's texts).
pub struct PageParams;

impl IntoParams for PageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![after_param().build(), size_param(Some(1)).build(), wait_param().build()]
    }
}

/// `after`: where a read continues.
pub fn after_param() -> ParameterBuilder {
    param(
        ParameterIn::Query,
        "after",
        string(),
        "Where to continue: `0` for the beginning, a cursor from `next` (`c1.…`), or (Altinn's form) \
         an event id.",
    )
    .example(Some(json!("0")))
}

/// `size`: events per page, a 64-bit number from `minimum` (the generic
/// feed takes any number, below 1 as the default).
pub fn size_param(minimum: Option<i64>) -> ParameterBuilder {
    let description = match minimum {
        Some(_) => "Events per page: 50 unless given, at most 1000 (larger is taken as 1000).",
        None => "Events per page: 50 unless given or below 1, at most 1000 (larger is taken as 1000).",
    };
    param(ParameterIn::Query, "size", integer().minimum(minimum), description)
}

/// `wait`: seconds a long-poll holds an empty page open.
pub fn wait_param() -> ParameterBuilder {
    param(
        ParameterIn::Query,
        "wait",
        integer().minimum(Some(0)).maximum(Some(MAX_WAIT_SECONDS)),
        "Long-poll: seconds to hold an empty page open until an event arrives (ours; 0 unless given).",
    )
}
