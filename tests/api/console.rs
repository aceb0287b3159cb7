//! The webhook console's page and assets as the service serves them (the
//! page itself is driven in a browser by `.ci/console-test`).

use crate::helpers::*;

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(app.url(path)).send().await.unwrap()
}

/// The page, its script and its style, each with a strict policy: only
/// this origin's script, style and API, no inline code, no frames.
#[tokio::test]
async fn the_console_is_served_with_a_strict_content_security_policy() {
    let app = TestApp::spawn().await;
    for (path, kind) in [
        ("/events/console", "text/html"),
        ("/events/console/", "text/html"),
        ("/events/console/console.js", "text/javascript"),
        ("/events/console/console.css", "text/css"),
    ] {
        let resp = get(&app, path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    let page = get(&app, "/events/console").await.text().await.unwrap();
    assert!(!page.contains("<script>") && !page.contains(" style="), "no inline script or style");
    assert!(page.contains(r#"<script src="/events/console/console.js" defer></script>"#));
    // The tests run in dev mode: the page offers the local issuer's tokens.
    assert!(page.contains(r#"data-dev="true""#));
    app.shutdown().await;
}

/// `console.enabled = false`: not served.
#[tokio::test]
async fn the_console_can_be_switched_off() {
    let mut config = test_config();
    config.console.enabled = false;
    let app = TestApp::spawn_with(config, altinn_events::Overrides::default()).await;
    for path in ["/events/console", "/events/console/console.js"] {
        assert_eq!(get(&app, path).await.status(), 404, "{path}");
    }
    app.shutdown().await;
}
