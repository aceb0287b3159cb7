//! Anonymous follow-up of one instance's events with an instance access key
//! (**new**; Altinn lists it as not implemented):
//! - `POST /events/api/v1/app/{org}/{app}/instances/{partyId}/{instanceGuid}/accesskey`:
//!   the app owner obtains a key for one instance;
//! - `POST /events/instanceeventsforinstance/{partyId}/{instanceGuid}`: anyone
//!   holding that key (header `Altinn-Instance-Access-Key`) reads the
//!   instance's events, paged like the other feeds.
//!
//! [`routes`] registers the handlers with their operations in the document.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::ApiPath;
use super::paging::{CloudEvent, NextQuery, PageParams, next_link, page_response, start};
use super::routes::{ACCESS_KEY, INSTANCE_EVENTS};
use super::state::AppState;
use crate::auth::instance_key::KeyError;
use crate::domain::cloud_event::instance_id;
use crate::domain::query::{After, RawParams, parse_size, parse_wait};
use crate::domain::{FeedId, Filters, Principal};
use crate::read::{FeedQuery, Paging};

pub const KEY_HEADER: &str = "altinn-instance-access-key";

/// Issuing keys and reading with them, with their operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(issue_key)).routes(routes!(read_with_key))
}

/// An instance access key (`POST .../accesskey`).
#[derive(Serialize, ToSchema)]
pub struct InstanceAccessKey {
    /// Send it as `Altinn-Instance-Access-Key`.
    pub key: String,
    /// `{partyId}/{instanceGuid}`.
    pub instance: String,
    pub expires: String,
}

/// The app owner obtains a key for one of its app's instances.
#[utoipa::path(
    post, path = ACCESS_KEY, tag = "Instances", operation_id = "issueInstanceAccessKey",
    summary = "The app owner issues an access key for one instance",
    params(
        ("org" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", example = "ttd", description = "The app owner's org code."),
        ("app" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", example = "apps-test", description = "The app's name."),
        ("party" = String, Path, pattern = "^[0-9]{1,19}$", example = "50002108", description = "The instance's party id."),
        ("guid" = String, Path, pattern = "^[0-9A-Fa-f-]{1,64}$", example = "3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11", description = "The instance guid."),
    ),
    responses(
        (status = 201, description = "The key, for `Altinn-Instance-Access-Key`.", body = InstanceAccessKey),
        (status = 400, description = "The instance id is not valid.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not this app's owner, or the token lacks the app's scope.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn issue_key(
    State(state): State<AppState>,
    ApiPath((org, app, party, guid)): ApiPath<(String, String, String, String)>,
    principal: Principal,
) -> Result<Response, ApiError> {
    if principal.org() != Some(org.as_str()) {
        return Err(ApiError::Forbidden(format!("Only {org} can issue keys for {org}/{app}.")));
    }
    if !principal.has_scope(&format!("altinn:events/{org}/{app}")) {
        return Err(ApiError::Forbidden(format!("The token lacks the scope altinn:events/{org}/{app}.")));
    }
    let instance =
        instance_id(&party, &guid).ok_or_else(|| ApiError::BadRequest("The instance id is not valid.".into()))?;
    let (key, expires) = state.instance_keys.issue(&org, &app, &instance).map_err(|e| match e {
        KeyError::Malformed => ApiError::BadRequest("The org or app name is not valid.".into()),
        other => ApiError::unavailable("instance access keys", other),
    })?;
    let expires = time::OffsetDateTime::from_unix_timestamp(expires as i64)
        .map(crate::domain::cloud_event::format_time)
        .unwrap_or_default();
    Ok((StatusCode::CREATED, axum::Json(InstanceAccessKey { key, instance, expires })).into_response())
}

const DENIED: &str = "The instance access key is missing, expired or not valid for this instance.";

/// The client's address as a rate-limit key: the TCP peer, or, behind
/// trusted proxies (`instance_access.client_ip_header`), the address the
/// outermost trusted proxy saw: `trusted_proxy_hops` entries from the right
/// of the header, the part the proxies appended (what a client puts on the
/// left is its own say, not evidence). Every line of the header counts, in
/// order, as if they were one list (a proxy may add a line of its own
/// rather than append). The entry must be an address (a port after it, as
/// some proxies write, is dropped); when it is not, the TCP peer counts.
/// IPv6 clients count by their /64, the block one subscriber gets.
fn client_key(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> String {
    let limits = &state.config.instance_access;
    let hops = limits.trusted_proxy_hops.max(1);
    let from_header = limits.client_ip_header.as_deref().and_then(|name| {
        let mut entries: Vec<&str> = Vec::new();
        for line in headers.get_all(name) {
            entries.extend(line.to_str().ok()?.split(',').map(str::trim));
        }
        let entry = entries.len().checked_sub(hops).map(|i| entries[i])?;
        parse_address(entry)
    });
    rate_key(from_header.unwrap_or_else(|| peer.ip()))
}

/// An address as proxies write them: `a.b.c.d`, `a.b.c.d:port`, an IPv6
/// address, bare or as `[v6]:port`.
fn parse_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

fn rate_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Reads one instance's events with a key. Every refusal looks the same (a
/// malformed path included), so the answer never tells whether the
/// instance exists or what was checked first. Each request spends the
/// client's budget; only a verified key spends the instance's, so wrong
/// keys cannot lock out the key's holder.
#[utoipa::path(
    post, path = INSTANCE_EVENTS, tag = "Instances", operation_id = "getInstanceEvents",
    summary = "The events of one instance, for whoever holds its access key",
    params(
        ("party" = String, Path, pattern = "^[0-9]{1,19}$", example = "50002108", description = "The instance's party id (the key's)."),
        ("guid" = String, Path, pattern = "^[0-9A-Fa-f-]{1,64}$", example = "3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11", description = "The instance guid (the key's)."),
        PageParams,
    ),
    responses(
        (status = 200, description = "A page of events in feed order, possibly empty. Follow `next` for the rest; it is always present.", body = Vec<CloudEvent>, headers(("next" = String, description = "The URL of the next page (the same query, `after` set past everything this page scanned)."))),
        (status = 400, description = "A parameter is not valid.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The key is missing, expired or not for this instance (one answer for all).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this client or for this instance.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = i64, description = "Seconds to wait."))),
    ),
    security(("instanceAccessKey" = [])),
)]
pub async fn read_with_key(
    State(state): State<AppState>,
    Path((party, guid)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let limits = &state.config.instance_access;
    let client = client_key(&state, &headers, peer);
    state
        .limiter
        .check(&format!("client:{client}"), limits.rate_per_minute_per_client)
        .map_err(|retry_after_seconds| ApiError::TooManyRequests { retry_after_seconds })?;
    let denied = || ApiError::Unauthorized(DENIED.into());
    let instance = instance_id(&party, &guid).ok_or_else(denied)?;
    let key = headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (org, app) = state.instance_keys.verify(key, &instance).map_err(|e: KeyError| {
        tracing::info!(reason = %e, "instance access key refused");
        denied()
    })?;
    // Keyed on the normalised instance, so spellings of one id share a budget.
    state
        .limiter
        .check(&format!("instance:{instance}"), limits.rate_per_minute_per_instance)
        .map_err(|retry_after_seconds| ApiError::TooManyRequests { retry_after_seconds })?;
    let raw = RawParams::from_query(uri.query());
    let size = parse_size(raw.size.as_deref()).map_err(ApiError::BadRequest)?;
    let wait = parse_wait(raw.wait.as_deref()).map_err(ApiError::BadRequest)?;
    let party = instance.split('/').next().unwrap_or_default();
    let feed = FeedId::Subject(format!("/party/{party}"));
    let holder = format!("instance:{instance}");
    let after = raw.after.as_deref().map(After::parse).unwrap_or(After::Beginning);
    let paging = Paging { start: start(&state, &feed, Some(after), None)?, size, wait };
    let q = FeedQuery {
        feed: feed.clone(),
        // Only the issuing app's events of that instance.
        filters: Filters {
            resource_instance: Some(instance),
            resource: Some(format!("urn:altinn:resource:app_{org}_{app}")),
            ..Filters::default()
        },
        paging,
        // The key is the authorization: no PDP.
        caller: None,
        action: crate::authz::Action::Read,
        holder,
        shared: false,
    };
    let page = state.reader.read(q).await?;
    let next = next_link(&state, &uri, NextQuery::Same, &feed, page.next, &[])?;
    let mut resp = page_response(page, next, "application/json");
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_entries_are_addresses_and_v6_counts_by_its_64() {
        assert_eq!(parse_address("203.0.113.7"), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(parse_address("203.0.113.7:51234"), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(parse_address("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_address("[2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        for junk in ["", "unknown", "x".repeat(10_000).as_str(), "1.2.3.4.5", "evil, 1.2.3.4"] {
            assert_eq!(parse_address(junk), None, "{junk}");
        }
        assert_eq!(
            rate_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            rate_key("2001:db8:1:2:bbbb::2".parse().unwrap())
        );
        assert_ne!(rate_key("2001:db8:1:2::1".parse().unwrap()), rate_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(rate_key("::ffff:203.0.113.7".parse().unwrap()), "203.0.113.7");
    }
}
