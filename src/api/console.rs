//! The webhook console (`/events/console`): one page, its script and its
//! style, compiled into the binary (no CDN: it works offline, as Swagger UI
//! does). It calls the public API only, with a bearer token the user pastes
//! (or, in dev mode, fetches from the local issuer) and the page keeps in
//! memory: no cookie, so nothing it does needs a CSRF exemption, and it
//! grants nothing that the token does not. A strict Content-Security-Policy
//! (no inline script or style, no `eval`, requests to this origin only) goes
//! with each of its responses. `console.enabled` switches it off.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where the console is served.
pub const CONSOLE: &str = "/events/console";
const SCRIPT_PATH: &str = "/events/console/console.js";
const STYLE_PATH: &str = "/events/console/console.css";

const INDEX: &str = include_str!("console/index.html");
/// Dev mode's token picker: a production build carries none of the local
/// issuer's paths (`.ci/production-build` checks).
#[cfg(feature = "dev")]
const DEV_FORM: &str = include_str!("console/dev-form.html");
#[cfg(not(feature = "dev"))]
const DEV_FORM: &str = "";
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only this origin's script, style and API; no inline code, no `eval`, no
/// frames, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; `dev`: the page offers the local issuer's tokens
/// and the dev inbox.
pub fn router(dev: bool) -> Router {
    static PAGES: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let pages = PAGES.get_or_init(|| [page(false), page(true)]);
    let index: &'static str = &pages[usize::from(dev)];
    Router::new()
        .route(CONSOLE, get(move || async move { asset("text/html; charset=utf-8", index) }))
        .route(&format!("{CONSOLE}/"), get(move || async move { asset("text/html; charset=utf-8", index) }))
        .route(SCRIPT_PATH, get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route(STYLE_PATH, get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

/// The page; `dev`: with the local issuer's token picker.
fn page(dev: bool) -> String {
    INDEX
        .replace("{{DEV_FORM}}", if dev { DEV_FORM } else { "" })
        .replace("{{DEV}}", if dev { "true" } else { "false" })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    /// Outside dev mode the page names none of the stand-ins' paths (and a
    /// production build does not even carry them: `.ci/production-build`).
    #[test]
    fn only_dev_mode_offers_the_local_issuer() {
        let (served, dev) = (super::page(false), super::page(true));
        assert!(!served.contains("/localtest/") && served.contains(r#"data-dev="false""#));
        assert!(dev.contains("/localtest/token/user") && dev.contains(r#"data-dev="true""#));
        assert!(!served.contains("{{") && !dev.contains("{{"), "every placeholder filled");
    }
}
