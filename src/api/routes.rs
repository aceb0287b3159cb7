//! The service's paths, as the router matches them, and their other
//! spellings. Altinn's routing (ASP.NET) also takes a trailing `/`, empty
//! segments and any ASCII case of the fixed segments: [`canonical_path`]
//! maps such a spelling to one of these before routing, so handlers and
//! `next` links see the canonical path.
//!
//! Each handler group registers its paths with their operations (`routes()`
//! in its module); [`ALL`] is the table the spellings are matched against,
//! and a test holds it equal to the paths of the served document.

pub const PUBLISH_APP: &str = "/events/api/v1/app";
pub const EVENTS: &str = "/events/api/v1/events";
pub const APP_PARTY: &str = "/events/api/v1/app/party";
pub const APP_OWNER: &str = "/events/api/v1/app/{org}/{app}";
pub const PARTY: &str = "/events/api/v1/party";
pub const ACCESS_KEY: &str = "/events/api/v1/app/{org}/{app}/instances/{party}/{guid}/accesskey";
pub const INSTANCE_EVENTS: &str = "/events/instanceeventsforinstance/{party}/{guid}";
pub const SUBSCRIPTIONS: &str = "/events/api/v1/subscriptions";
pub const SUBSCRIPTION: &str = "/events/api/v1/subscriptions/{id}";
/// Where Altinn's `Location` header points (singular).
pub const SUBSCRIPTION_LOCATION: &str = "/events/api/v1/subscription/{id}";
pub const SUBSCRIPTION_VALIDATE: &str = "/events/api/v1/subscriptions/{id}/validate";
pub const SUBSCRIPTION_ROTATE: &str = "/events/api/v1/subscriptions/{id}/secret/rotate";
pub const SUBSCRIPTION_ENABLE: &str = "/events/api/v1/subscriptions/{id}/enable";
pub const SUBSCRIPTION_REPLAY: &str = "/events/api/v1/subscriptions/{id}/replay";
pub const SUBSCRIPTION_DELIVERIES: &str = "/events/api/v1/subscriptions/{id}/deliveries";
pub const HEALTH: &str = "/health";
pub const LIVE: &str = "/health/live";
pub const READY: &str = "/health/ready";
pub const DEPENDENCIES: &str = "/health/dependencies";
pub const METRICS: &str = "/metrics";

pub const ALL: &[&str] = &[
    PUBLISH_APP,
    EVENTS,
    APP_PARTY,
    APP_OWNER,
    PARTY,
    ACCESS_KEY,
    INSTANCE_EVENTS,
    SUBSCRIPTIONS,
    SUBSCRIPTION,
    SUBSCRIPTION_LOCATION,
    SUBSCRIPTION_VALIDATE,
    SUBSCRIPTION_ROTATE,
    SUBSCRIPTION_ENABLE,
    SUBSCRIPTION_REPLAY,
    SUBSCRIPTION_DELIVERIES,
    HEALTH,
    LIVE,
    READY,
    DEPENDENCIES,
    METRICS,
];

/// The canonical spelling of `path` when it is a route of the service
/// written with a trailing `/`, with empty segments (`//`, which Altinn's
/// clients build and the platform's proxies merge) or in another ASCII
/// case; `None` when it already is canonical or is no route.
pub fn canonical_path(path: &str) -> Option<String> {
    // Every fixed segment of a route is lower case: a path without upper
    // case, `//` and a trailing `/` is canonical already (or no route).
    // The common case, so it costs no more than this scan.
    if !path.ends_with('/') && !path.bytes().any(|b| b.is_ascii_uppercase()) && !path.contains("//") {
        return None;
    }
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    // The leading empty segment (before the first `/`) stays; others go.
    let segments: Vec<&str> =
        trimmed.split('/').enumerate().filter(|(i, s)| *i == 0 || !s.is_empty()).map(|(_, s)| s).collect();
    let mut best: Option<(usize, String)> = None;
    for pattern in ALL {
        let fixed: Vec<&str> = pattern.split('/').collect();
        if fixed.len() != segments.len() {
            continue;
        }
        let mut exact = 0;
        let mut rebuilt = Vec::with_capacity(fixed.len());
        let matches = fixed.iter().zip(&segments).all(|(f, s)| {
            if f.starts_with('{') {
                rebuilt.push(*s);
                !s.is_empty()
            } else if f.eq_ignore_ascii_case(s) {
                exact += 1;
                rebuilt.push(*f);
                true
            } else {
                false
            }
        });
        if matches && best.as_ref().is_none_or(|(n, _)| exact > *n) {
            best = Some((exact, rebuilt.join("/")));
        }
    }
    best.map(|(_, p)| p).filter(|p| p != path)
}

/// Rewrites the request's path to its canonical spelling (see
/// [`canonical_path`]); everything else of the URI stays.
pub fn canonicalize<B>(req: &mut axum::http::Request<B>) {
    let Some(path) = canonical_path(req.uri().path()) else { return };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn routes_in_any_case_and_with_a_trailing_slash_map_to_their_canonical_form() {
        assert_eq!(canonical_path("/events/api/v1/events/").as_deref(), Some("/events/api/v1/events"));
        assert_eq!(canonical_path("/Events/Api/V1/App/Party/").as_deref(), Some("/events/api/v1/app/party"));
        assert_eq!(
            canonical_path("/EVENTS/API/V1/APP/TTD/Apps-Test").as_deref(),
            Some("/events/api/v1/app/TTD/Apps-Test")
        );
        assert_eq!(
            canonical_path("/events/api/v1/app/ttd/a/Instances/1/G/AccessKey").as_deref(),
            Some("/events/api/v1/app/ttd/a/instances/1/G/accesskey")
        );
        assert_eq!(canonical_path("/events/api/v1/app/party"), None, "already canonical");
        assert_eq!(canonical_path("/events/api/v1/nope"), None, "not a route");
        assert_eq!(canonical_path("/Health/").as_deref(), Some("/health"));
        assert_eq!(
            canonical_path("/events/api/v1/subscriptions//1").as_deref(),
            Some("/events/api/v1/subscriptions/1")
        );
        assert_eq!(canonical_path("//events//api/v1/app/party/").as_deref(), Some("/events/api/v1/app/party"));
        assert_eq!(canonical_path("/"), None);
    }
}
