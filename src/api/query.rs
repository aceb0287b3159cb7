//! Reading feeds: `GET /app/{org}/{app}`, `GET /app/party`, `POST /party`,
//! `GET /events`. Every page is authorized event by event with one PDP
//! multi-request per batch scanned, filled up to `size` permitted events
//! (within a scan budget), and answered with a `next` link that points past
//! the last event scanned.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

use crate::auth::Principal;
use crate::authz::{Action, Caller};
use crate::domain::query::{After, PartyParam, RawParams, app_query, generic_query};
use crate::error::ApiError;
use crate::feeds::{FeedId, Filters};
use crate::register::{PartyRef, RegisterError};
use crate::state::AppState;

pub const SCOPE_SUBSCRIBE: &str = "altinn:events.subscribe";
const APP_RESOURCE_PREFIX: &str = "urn:altinn:resource:app_";
pub const SCOPE_INSTANCES_READ: &str = "altinn:serviceowner/instances.read";
const PERSON_HEADER: &str = "person";
const ALT_SUBJECT_HEADER: &str = "altinn-alternativesubject";

/// One feed read on behalf of a caller.
pub(crate) struct FeedQuery<'a> {
    pub feed: FeedId,
    pub after: Option<After>,
    /// Without `after`: start at the first event at or after this time.
    pub from: Option<String>,
    pub filters: Filters,
    pub size: usize,
    /// Who the PDP decides for; `None` when the request holds a capability
    /// (an instance access key) that already grants the whole query.
    pub caller: Option<Caller<'a>>,
    pub action: Action,
    /// Long-poll: hold an empty page open this long for new events.
    pub wait: Duration,
}

/// Answers a query: a filled page at once, or, when the page is empty and
/// the caller asked to wait, the first page with permitted events that
/// arrive within `wait` (an empty page with `next` when none do).
pub(crate) async fn run(state: &AppState, q: FeedQuery<'_>) -> Result<(Vec<Value>, u64), ApiError> {
    let start = match &q.after {
        None => match &q.from {
            Some(from) => state.feeds.position_at_time(&q.feed, &search_time(from)).await?,
            None => 0,
        },
        Some(After::Position(p)) => *p,
        // Altinn semantics: an unknown id reads from the beginning.
        Some(After::EventId(id)) => state.feeds.locate(&q.feed, id).await?.unwrap_or(0),
    };
    let (events, next, at_end) = fill(state, &q, start).await?;
    // Wait only at the end of the feed: an empty page that ran out of scan
    // budget answers at once, so the consumer moves on with `next`.
    if !events.is_empty() || q.wait.is_zero() || !at_end {
        return Ok((events, next));
    }
    let Ok(_permit) = state.waiters.slots.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable("long-polling capacity", "too many waiting requests"));
    };
    metrics::gauge!("query_waiters").increment(1.0);
    let _gauge = scopeguard(|| metrics::gauge!("query_waiters").decrement(1.0));
    let interval = Duration::from_millis(state.config.limits.wait_poll_interval_ms);
    let mut changes = state.feeds.watch(&q.feed, interval, next);
    let mut shutdown = state.shutdown.clone();
    let deadline = tokio::time::Instant::now() + q.wait;
    let mut pos = next;
    loop {
        // Read again after subscribing, so an append in between is not missed.
        let (events, next, at_end) = fill(state, &q, pos).await?;
        pos = next;
        if !events.is_empty() || !at_end {
            return Ok((events, pos));
        }
        state.waiters.parked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _parked = scopeguard(|| {
            state.waiters.parked.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    Ok((Vec::new(), pos))
}

/// Event times come from the clocks of several instances: where a `from`
/// query starts, allow events registered this much out of order.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

fn search_time(from: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(from, &Rfc3339) {
        Ok(t) => crate::domain::cloud_event::format_time(t - CLOCK_SKEW),
        // Starting at the beginning is always correct, only slower.
        Err(_) => String::new(),
    }
}

/// Runs `f` when dropped (a request cancelled by its client included).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Fills a page from `start`: read, authorize the batch, keep the permitted,
/// continue until `size` are kept, the feed ends, or the scan budget is
/// spent. Returns the events, the position after the last event scanned, and
/// whether the scan reached the end of the feed.
async fn fill(state: &AppState, q: &FeedQuery<'_>, start: u64) -> Result<(Vec<Value>, u64, bool), ApiError> {
    let budget = (q.size as u64).saturating_mul(state.config.limits.scan_budget_factor).max(100);
    let mut kept = Vec::with_capacity(q.size);
    let mut pos = start;
    // How many events to read next: the first read asks for a page's worth;
    // while the PDP denies, each further read asks for twice as many, so a
    // mostly denied feed costs a few PDP requests per page, not one per event.
    let mut batch = q.size;
    loop {
        let remaining_budget = budget - (pos - start);
        let page = state.feeds.read(&q.feed, pos, &q.filters, batch, remaining_budget).await?;
        metrics::histogram!("query_round_trips_per_read").record(f64::from(page.round_trips));
        let mut next = page.next;
        if !page.events.is_empty() {
            let records: Vec<_> = page.events.iter().map(|e| &e.record).collect();
            let permitted = match q.caller {
                Some(caller) => state
                    .pdp
                    .authorize(caller, q.action, &records)
                    .await
                    .map_err(|e| ApiError::unavailable("authorization", e))?,
                None => vec![true; records.len()],
            };
            let denied = permitted.iter().filter(|p| !**p).count();
            metrics::counter!("query_events_denied_total").increment(denied as u64);
            for (event, ok) in page.events.into_iter().zip(permitted) {
                if !ok {
                    continue;
                }
                if kept.len() == q.size {
                    // Read past a full page: the next page starts at this
                    // permitted event; the denied ones before it are done.
                    next = event.seq;
                    break;
                }
                kept.push(event.record.cloud_event);
            }
            if denied > 0 {
                batch = (batch * 2).min(crate::domain::query::MAX_SIZE);
            }
        }
        // No progress without reaching the end cannot happen with a sound
        // feed; stop rather than spin.
        let stuck = next <= pos && !page.at_end;
        pos = next;
        if kept.len() >= q.size || page.at_end || pos - start >= budget || stuck {
            return Ok((kept, pos, page.at_end));
        }
    }
}

/// The same request with `after` set to the cursor, as an absolute URL.
pub(crate) fn next_link(state: &AppState, uri: &Uri, keep_query: bool, next: u64) -> String {
    let base = state.config.platform_base().map(String::from).unwrap_or_default();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if keep_query {
        for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
            if !k.eq_ignore_ascii_case("after") {
                query.append_pair(&k, &v);
            }
        }
    }
    query.append_pair("after", &After::cursor(next));
    format!("{}{}?{}", base.trim_end_matches('/'), uri.path(), query.finish())
}

pub(crate) fn page_response(events: Vec<Value>, next: String, content_type: &'static str) -> Response {
    let mut resp = axum::Json(events).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&next) {
        resp.headers_mut().insert("next", v);
    }
    resp
}

async fn resolve_party(state: &AppState, party: &PartyParam) -> Result<u64, ApiError> {
    let reference = match party {
        PartyParam::Party(id) => return Ok(*id),
        PartyParam::Unit(n) => PartyRef::OrgNo(n.clone()),
        PartyParam::Person(n) => PartyRef::Ssn(n.clone()),
    };
    state.register.party_id(&reference).await.map_err(|e| match e {
        RegisterError::NotFound => ApiError::NotFound("No party found for the given unit or person.".into()),
        RegisterError::Refused(_) => ApiError::BadRequest("The given unit or person is not valid.".into()),
        other => ApiError::unavailable("register", other),
    })
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `GET /events/api/v1/app/{org}/{app}`: the app owner's feed of its app.
pub async fn app_owner(
    State(state): State<AppState>,
    Path((org, app)): Path<(String, String)>,
    principal: Principal,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    if principal.org().is_none() {
        return Err(ApiError::Unauthorized("Only orgs can call this api".into()));
    }
    if !principal.has_scope(&format!("altinn:events/{org}/{app}")) && !principal.has_scope(SCOPE_INSTANCES_READ) {
        return Err(ApiError::Forbidden(format!("The token lacks the scope altinn:events/{org}/{app}.")));
    }
    let mut raw = RawParams::from_query(uri.query());
    raw.person = header_str(&headers, PERSON_HEADER);
    let q = app_query(&raw, false).map_err(ApiError::BadRequest)?;
    let resource = format!("urn:altinn:resource:app_{org}_{app}");
    let mut filters = Filters { from_time: q.from.clone(), to_time: q.to, types: q.types, ..Filters::default() };
    // A party narrows to its subject feed; otherwise the app's resource feed.
    let feed = match &q.party {
        Some(p) => {
            filters.resource = Some(resource);
            FeedId::Subject(format!("/party/{}", resolve_party(&state, p).await?))
        }
        None => FeedId::Resource(resource),
    };
    let query = FeedQuery {
        feed,
        after: q.after,
        from: q.from,
        filters,
        size: q.size,
        caller: Some(Caller::Principal(&principal)),
        action: Action::Read,
        wait: q.wait,
    };
    let (events, next) = run(&state, query).await?;
    Ok(page_response(events, next_link(&state, &uri, true, next), "application/json"))
}

async fn party_query(state: &AppState, principal: &Principal, raw: RawParams) -> Result<(Vec<Value>, u64), ApiError> {
    let q = app_query(&raw, true).map_err(ApiError::BadRequest)?;
    let party = resolve_party(state, q.party.as_ref().expect("required above")).await?;
    let filters = Filters {
        from_time: q.from.clone(),
        to_time: q.to,
        types: q.types,
        sources: q.sources,
        // The party's subject feed also holds generic events; this endpoint
        // is about app events (generic ones are read through /events).
        resource_prefix: Some(APP_RESOURCE_PREFIX.to_owned()),
        ..Filters::default()
    };
    let query = FeedQuery {
        feed: FeedId::Subject(format!("/party/{party}")),
        after: q.after,
        from: q.from,
        filters,
        size: q.size,
        caller: Some(Caller::Principal(principal)),
        action: Action::Read,
        wait: q.wait,
    };
    run(state, query).await
}

/// `GET /events/api/v1/app/party`: what is new for one party.
pub async fn app_party(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut raw = RawParams::from_query(uri.query());
    raw.person = header_str(&headers, PERSON_HEADER);
    let (events, next) = party_query(&state, &principal, raw).await?;
    Ok(page_response(events, next_link(&state, &uri, true, next), "application/json"))
}

/// The JSON body of `POST /events/api/v1/party`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PartyBody {
    party: Option<Value>,
    unit: Option<String>,
    person: Option<String>,
    after: Option<String>,
    from: Option<String>,
    to: Option<String>,
    source: Vec<String>,
    #[serde(rename = "type")]
    types: Vec<String>,
    size: Option<Value>,
    wait: Option<Value>,
}

fn scalar(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `POST /events/api/v1/party`: the party query with its fields in the body,
/// so national identity numbers stay out of URLs and access logs. `next`
/// carries only the cursor; an `after` in the URL wins over the body's.
pub async fn party_post(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let parsed: PartyBody = if body.is_empty() {
        PartyBody::default()
    } else {
        serde_json::from_slice(&body)
            // A fixed text: serde's message could quote an identity number.
            .map_err(|_| ApiError::BadRequest("The body is not a valid party query: expected a JSON object with party, unit, person, after, from, to, source, type, size, wait.".into()))?
    };
    let url = RawParams::from_query(uri.query());
    let raw = RawParams {
        after: url.after.or(parsed.after),
        from: parsed.from,
        to: parsed.to,
        party: scalar(parsed.party),
        unit: parsed.unit,
        person: parsed.person,
        types: parsed.types,
        sources: parsed.source,
        size: scalar(parsed.size),
        wait: url.wait.or(scalar(parsed.wait)),
        ..RawParams::default()
    };
    let (events, next) = party_query(&state, &principal, raw).await?;
    Ok(page_response(events, next_link(&state, &uri, false, next), "application/json"))
}

/// `GET /events/api/v1/events`: a resource's generic events, for
/// subscribers the PDP permits.
pub async fn generic(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    if !principal.has_scope(SCOPE_SUBSCRIBE) {
        return Err(ApiError::Forbidden(format!("The token lacks the scope {SCOPE_SUBSCRIBE}.")));
    }
    let mut raw = RawParams::from_query(uri.query());
    raw.alternative_subject = header_str(&headers, ALT_SUBJECT_HEADER);
    let q = generic_query(&raw).map_err(ApiError::BadRequest)?;
    let filters = Filters {
        types: q.types,
        subject: q.subject,
        alternative_subject: q.alternative_subject,
        ..Filters::default()
    };
    let query = FeedQuery {
        feed: FeedId::Resource(q.resource),
        after: Some(q.after),
        from: None,
        filters,
        size: q.size,
        caller: Some(Caller::Principal(&principal)),
        action: Action::Subscribe,
        wait: q.wait,
    };
    let (events, next) = run(&state, query).await?;
    Ok(page_response(events, next_link(&state, &uri, true, next), "application/cloudevents+json"))
}
