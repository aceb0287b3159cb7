//! Who is calling, read from the request: the Altinn token (bearer or
//! `AltinnStudioRuntime` cookie) and the platform access token, checked by
//! the token clients in `auth`. Every rejection is an `ApiError`.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::AuthError;
use crate::domain::{PlatformApp, Principal};

pub const ACCESS_TOKEN_HEADER: &str = "PlatformAccessToken";
pub const RUNTIME_COOKIE: &str = "AltinnStudioRuntime";

/// The Altinn token of a request: `Authorization: Bearer` first, then the
/// `AltinnStudioRuntime` cookie.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(rest) = v.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| &v[7..]) {
            let rest = rest.trim();
            if !rest.is_empty() {
                return Some(rest);
            }
        }
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == RUNTIME_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = token_from_headers(&parts.headers).ok_or(AuthError::Missing)?;
        let principal = state.tokens.validate(token).await.inspect_err(|e| {
            tracing::info!(reason = %e, "altinn token rejected");
        })?;
        Ok(principal)
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
}
