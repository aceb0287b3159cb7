//! Who is calling, read from the request: the Altinn token (bearer or
//! `AltinnStudioRuntime` cookie) and the platform access token, checked by
//! the token clients in `auth`; and JSON bodies, which need a JSON media
//! type. Every rejection is an `ApiError`.
//!
//! Invariants it keeps:
//! - **A cookie proves no intent.** A browser sends the
//!   `AltinnStudioRuntime` cookie with any request to the platform's host,
//!   a page of another site's making included (SameSite=Lax does not stop a
//!   sibling `*.apps.altinn.no` page). A request authenticated by the cookie
//!   that can change something (any method but `GET`, `HEAD`, `OPTIONS`)
//!   is accepted only with proof from the browser that it came from this
//!   origin: `Sec-Fetch-Site: same-origin` (or `none`: the user's own
//!   action), or, from a browser that does not send that header, an
//!   `Origin` equal to the platform's. Without such proof it is `403`; a
//!   client that is not a browser sends `Authorization: Bearer`.
//! - **A JSON body is declared JSON.** Bodies are read as JSON only under
//!   `application/json` or `application/*+json` (`415` otherwise, as
//!   ASP.NET's `[Consumes]` answers): a cross-site HTML form, which can
//!   only send `text/plain`, form or multipart bodies, never gets one read.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use super::error::ApiError;
use super::state::AppState;
use crate::auth::AuthError;
use crate::domain::{PlatformApp, Principal};

pub const ACCESS_TOKEN_HEADER: &str = "PlatformAccessToken";
pub const RUNTIME_COOKIE: &str = "AltinnStudioRuntime";

/// Where a request's Altinn token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`: the client put it there.
    Bearer,
    /// The `AltinnStudioRuntime` cookie: the browser adds it by itself.
    Cookie,
}

/// The Altinn token of a request: `Authorization: Bearer` first, then the
/// `AltinnStudioRuntime` cookie.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    token_and_source(headers).map(|(token, _)| token)
}

/// The Altinn token of a request and where it came from.
pub fn token_and_source(headers: &HeaderMap) -> Option<(&str, TokenSource)> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(rest) = v.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| &v[7..]) {
            let rest = rest.trim();
            if !rest.is_empty() {
                return Some((rest, TokenSource::Bearer));
            }
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == RUNTIME_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| (v, TokenSource::Cookie))
}

pub const CROSS_SITE_COOKIE: &str = "A request that changes something and is authenticated by the AltinnStudioRuntime cookie must come from a page of this site (Sec-Fetch-Site: same-origin, or its Origin); other clients send the token as Authorization: Bearer.";

/// Whether a request authenticated by the cookie may do what its method
/// does (see the module's invariants): safe methods always; others only
/// with the browser's word that the request is this origin's own.
pub fn cookie_request_allowed(method: &Method, headers: &HeaderMap, own_origin: Option<&str>) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    // Every current browser sends it on requests to secure origins; only the
    // browser can set it (a page's script cannot).
    if let Some(site) = header("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
    }
    // Older browsers: the Origin of a state-changing request, which they send
    // on cross-origin requests (and most on same-origin ones).
    match (header("origin"), own_origin) {
        (Some(origin), Some(own)) => origin.eq_ignore_ascii_case(own),
        // No proof either way: not accepted.
        _ => false,
    }
}

/// The platform's origin (`https://platform.altinn.no`), as browsers write
/// it in `Origin`.
pub fn origin_of(url: &url::Url) -> Option<String> {
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let (token, source) = token_and_source(&parts.headers).ok_or(AuthError::Missing)?;
        if source == TokenSource::Cookie {
            let own = state.config.platform_url.as_ref().and_then(origin_of);
            if !cookie_request_allowed(&parts.method, &parts.headers, own.as_deref()) {
                tracing::info!(reason = "cookie without same-origin proof", "altinn token refused");
                return Err(ApiError::Forbidden(CROSS_SITE_COOKIE.into()));
            }
        }
        let principal = state.tokens.validate(token).await.inspect_err(|e| {
            tracing::info!(reason = %e, "altinn token rejected");
        })?;
        Ok(principal)
    }
}

/// `application/json` or `application/*+json` (with any parameters), as
/// ASP.NET's `[Consumes("application/json")]` takes them.
pub fn is_json_media_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype.get(subtype.len() - 5..).is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

pub const NOT_JSON: &str = "Expected a JSON body with `Content-Type: application/json`.";

/// A request body that is declared JSON (`415` otherwise); not parsed yet.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_media_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(NOT_JSON.into()));
        }
        Ok(Self(Bytes::from_request(req, state).await?))
    }
}

/// A JSON body, or none: a body without a media type must be empty.
pub struct OptionalJsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = req.headers().contains_key(header::CONTENT_TYPE);
        if declared && !is_json_media_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(NOT_JSON.into()));
        }
        let body = Bytes::from_request(req, state).await?;
        if !declared && !body.is_empty() {
            return Err(ApiError::UnsupportedMediaType(NOT_JSON.into()));
        }
        Ok(Self(body))
    }
}

/// `axum::extract::Path` whose rejections are problem documents.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// An optional caller: `None` without a token, 401 with a bad one.
pub struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if token_from_headers(&parts.headers).is_none() {
            return Ok(Self(None));
        }
        Principal::from_request_parts(parts, state).await.map(|p| Self(Some(p)))
    }
}

impl FromRequestParts<AppState> for PlatformApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = parts.headers.get(ACCESS_TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(ApiError::Forbidden("Missing platform access token.".into()));
        };
        verify_access_token(state, token).await
    }
}

/// An optional platform access token: `None` without the header, 403 with a bad one.
pub struct MaybePlatformApp(pub Option<PlatformApp>);

impl FromRequestParts<AppState> for MaybePlatformApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match parts.headers.get(ACCESS_TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
            None => Ok(Self(None)),
            Some(token) => verify_access_token(state, token).await.map(|a| Self(Some(a))),
        }
    }
}

async fn verify_access_token(state: &AppState, token: &str) -> Result<PlatformApp, ApiError> {
    state.access_tokens.verify(token).await.map_err(|e| {
        tracing::info!(reason = %e, "platform access token rejected");
        match e {
            AuthError::KeysUnavailable(src) => ApiError::unavailable("access token certificates", src),
            _ => ApiError::Forbidden("The platform access token is not valid.".into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_wins_over_cookie_and_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; AltinnStudioRuntime=cookie-token; b=2"));
        assert_eq!(token_from_headers(&h), Some("cookie-token"));
        h.insert("authorization", HeaderValue::from_static("Bearer header-token"));
        assert_eq!(token_from_headers(&h), Some("header-token"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(token_from_headers(&h), Some("cookie-token"));
        h.remove("cookie");
        assert_eq!(token_from_headers(&h), None);
    }

    #[test]
    fn cookie_requests_that_change_state_need_same_origin_proof() {
        let own = Some("https://platform.altinn.no");
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(cookie_request_allowed(&Method::GET, &with(&[("sec-fetch-site", "cross-site")]), own));
        assert!(cookie_request_allowed(&Method::POST, &with(&[("sec-fetch-site", "same-origin")]), own));
        assert!(!cookie_request_allowed(&Method::POST, &with(&[("sec-fetch-site", "same-site")]), own));
        assert!(!cookie_request_allowed(&Method::DELETE, &with(&[("sec-fetch-site", "cross-site")]), own));
        // Sec-Fetch-Site decides when present, whatever Origin says.
        let forged = with(&[("sec-fetch-site", "same-site"), ("origin", "https://platform.altinn.no")]);
        assert!(!cookie_request_allowed(&Method::POST, &forged, own));
        assert!(cookie_request_allowed(&Method::POST, &with(&[("origin", "https://platform.altinn.no")]), own));
        assert!(!cookie_request_allowed(&Method::POST, &with(&[("origin", "https://ttd.apps.altinn.no")]), own));
        assert!(!cookie_request_allowed(&Method::POST, &with(&[("origin", "null")]), own));
        assert!(!cookie_request_allowed(&Method::POST, &HeaderMap::new(), own), "no proof");
        assert_eq!(origin_of(&"https://platform.altinn.no/".parse().unwrap()).as_deref(), own);
        assert_eq!(origin_of(&"http://127.0.0.1:5080/".parse().unwrap()).as_deref(), Some("http://127.0.0.1:5080"));
    }

    #[test]
    fn json_media_types() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static(v));
            is_json_media_type(&h)
        };
        for ok in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json"]
        {
            assert!(ct(ok), "{ok}");
        }
        for not in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/+json",
            "json",
        ] {
            assert!(!ct(not), "{not}");
        }
        assert!(!is_json_media_type(&HeaderMap::new()));
    }
}
