//! Dev-only stand-ins for the Altinn platform services this service calls,
//! at their Altinn paths, so that dev mode runs the production code paths
//! over real HTTP: OIDC discovery + JWKS, the Maskinporten exchange, the PDP
//! and Register; plus token endpoints for developers. Never mounted by `serve`.

pub mod dataset;
pub mod keys;
mod pdp;
mod setup;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::api::ApiError;
use crate::authz::xacml::XacmlRoot;
pub use dataset::Dataset;
pub use keys::LocalKeys;
pub use setup::DevPlatform;

pub const OIDC_PATH: &str = crate::auth::OIDC_DISCOVERY_PATH;

/// The local platform: keys, dataset, and request counters for tests.
pub struct LocalPlatform {
    pub keys: LocalKeys,
    pub dataset: Dataset,
    base: Url,
    jwks_requests: AtomicU64,
    pdp_requests: AtomicU64,
    /// The `traceparent` of the last PDP request (tests of trace propagation).
    pub last_pdp_traceparent: std::sync::Mutex<Option<String>>,
    /// What the built-in webhook receivers got, newest last, by name.
    received: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Value>>>,
}

/// How many pushes a receiver keeps.
const RECEIVER_KEEPS: usize = 200;

impl LocalPlatform {
    /// `base` is the platform URL with a trailing slash.
    pub fn new(keys: LocalKeys, dataset: Dataset, base: Url) -> Self {
        Self {
            keys,
            dataset,
            base,
            jwks_requests: AtomicU64::new(0),
            pdp_requests: AtomicU64::new(0),
            last_pdp_traceparent: Default::default(),
            received: Default::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        self.base.join(path).map(String::from).unwrap_or_default()
    }

    /// The `iss` of Altinn tokens, as the discovery document states it.
    pub fn issuer(&self) -> String {
        self.url("authentication/api/v1/openid/")
    }

    fn maskinporten_issuer(&self) -> String {
        self.url("localtest/maskinporten/")
    }

    /// Writes `{issuer}.pem` for every service owner into `dir`, so that the
    /// production access-token verifier accepts local platform tokens.
    pub fn write_access_token_certs(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let pem = self.keys.public_pem().map_err(std::io::Error::other)?;
        for owner in &self.dataset.service_owners {
            std::fs::write(dir.join(format!("{}.pem", owner.org)), &pem)?;
        }
        Ok(())
    }

    fn sign(&self, claims: Value) -> Result<String, ApiError> {
        self.keys.sign(&claims).map_err(ApiError::internal)
    }

    fn timed(&self, iss: String, mut claims: Map<String, Value>) -> Value {
        let now = now();
        claims.insert("iss".into(), json!(iss));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + TOKEN_LIFETIME_SECONDS));
        Value::Object(claims)
    }
}

/// How long a local token is valid.
const TOKEN_LIFETIME_SECONDS: u64 = 3600;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn router(platform: Arc<LocalPlatform>) -> Router {
    Router::new()
        .route(&format!("/{OIDC_PATH}"), get(discovery))
        .route(&format!("/{OIDC_PATH}/jwks"), get(jwks))
        .route("/authentication/api/v1/exchange/maskinporten", get(exchange_maskinporten))
        .route("/authorization/api/v1/decision", post(decision))
        .route("/register/api/v1/parties/lookup", post(party_lookup))
        .route("/register/api/v2/internal/parties/query", post(party_query))
        .route("/localtest/token/user", get(user_token))
        .route(crate::api::openapi::DEV_TOKEN_URL, post(oauth2_token))
        .route("/localtest/token/org", get(org_token))
        .route("/localtest/token/platform", get(platform_token))
        .route("/localtest/token/systemuser", get(system_user_token))
        .route("/localtest/token/maskinporten", get(maskinporten_token))
        .route("/localtest/keys/rotate", post(rotate_keys))
        .route("/localtest/webhooks/{name}", get(receiver_log).post(receive))
        .route("/localtest/stats", get(stats))
        // A PDP multi-request for a 1000-event page is far larger than an
        // event: the stand-ins take what the Altinn services take.
        .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
        .with_state(platform)
}

type P = State<Arc<LocalPlatform>>;

async fn discovery(State(p): P) -> Json<Value> {
    Json(json!({
        "issuer": p.issuer(),
        "jwks_uri": p.url(&format!("{OIDC_PATH}/jwks")),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(p): P) -> Json<Value> {
    p.jwks_requests.fetch_add(1, Ordering::SeqCst);
    Json(p.keys.jwks())
}

fn text(token: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserTokenQuery {
    user_id: Option<u64>,
    party_id: Option<u64>,
    auth_level: Option<u8>,
    scope: Option<String>,
}

/// `GET /localtest/token/user?userId=1337&partyId=1337&authLevel=2[&scope=...]`
async fn user_token(State(p): P, Query(q): Query<UserTokenQuery>) -> Result<Response, ApiError> {
    let auth_level = q.auth_level.unwrap_or(2);
    if auth_level > 4 {
        return Err(ApiError::BadRequest("authLevel must be 0-4".into()));
    }
    let claims = user_claims(&p, q.user_id.unwrap_or(1337), q.party_id, auth_level, q.scope.as_deref());
    Ok(text(p.sign(p.timed(p.issuer(), claims))?))
}

fn user_claims(
    p: &LocalPlatform,
    user_id: u64,
    party_id: Option<u64>,
    auth_level: u8,
    scope: Option<&str>,
) -> Map<String, Value> {
    let party_id = party_id.or_else(|| p.dataset.person_by_user(user_id).map(|u| u.party_id)).unwrap_or(user_id);
    let mut claims = Map::new();
    claims.insert("urn:altinn:userid".into(), json!(user_id.to_string()));
    claims.insert("urn:altinn:partyid".into(), json!(party_id.to_string()));
    claims.insert("urn:altinn:authlevel".into(), json!(auth_level.to_string()));
    claims.insert("urn:altinn:authenticatemethod".into(), json!("localtest"));
    if let Some(scope) = scope.filter(|s| !s.trim().is_empty()) {
        claims.insert("scope".into(), json!(scope));
    }
    claims
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrgTokenQuery {
    org: Option<String>,
    org_number: Option<String>,
    scope: Option<String>,
}

fn org_claims(org: Option<&str>, org_number: &str, scope: Option<&str>) -> Map<String, Value> {
    let mut claims = Map::new();
    if let Some(org) = org {
        claims.insert("urn:altinn:org".into(), json!(org));
    }
    claims.insert("urn:altinn:orgNumber".into(), json!(org_number));
    claims.insert("urn:altinn:authlevel".into(), json!("3"));
    claims.insert("urn:altinn:authenticatemethod".into(), json!("maskinporten"));
    if let Some(scope) = scope.filter(|s| !s.trim().is_empty()) {
        claims.insert("scope".into(), json!(scope));
    }
    claims
}

/// `GET /localtest/token/org?org=ttd&orgNumber=991825827[&scope=...]`; an
/// organisation without org code gives `orgNumber` alone.
async fn org_token(State(p): P, Query(q): Query<OrgTokenQuery>) -> Result<Response, ApiError> {
    let org = q.org.filter(|o| !o.is_empty());
    let claims = org_token_claims(&p, org, q.org_number, q.scope.as_deref())?;
    Ok(text(p.sign(p.timed(p.issuer(), claims))?))
}

fn org_token_claims(
    p: &LocalPlatform,
    org: Option<String>,
    org_number: Option<String>,
    scope: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    let org_number = match (&org, org_number) {
        (_, Some(n)) => n,
        (Some(o), None) => p
            .dataset
            .service_owner(o)
            .map(|s| s.org_number.clone())
            .ok_or_else(|| ApiError::BadRequest(format!("unknown org {o}; give orgNumber")))?,
        (None, None) => return Err(ApiError::BadRequest("give org or orgNumber".into())),
    };
    if org_number.len() != 9 || !org_number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest("orgNumber must be 9 digits".into()));
    }
    Ok(org_claims(org.as_deref(), &org_number, scope))
}

/// `POST /localtest/oauth2/token`: OAuth2 client credentials (RFC 6749
/// 4.4), so that Swagger UI's Authorize button gets a token. `client_id`
/// says who: an org code (`ttd`), an organisation number, or
/// `user:{userId}`; the secret is not checked. Credentials in the body or
/// as HTTP Basic.
async fn oauth2_token(State(p): P, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let basic_id = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(id, _)| url_decode(id)));
    let oauth_error = |error: &str, description: String| {
        (StatusCode::BAD_REQUEST, Json(json!({"error": error, "error_description": description}))).into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error("unsupported_grant_type", "Only client_credentials.".into());
    }
    let Some(client) = form.get("client_id").cloned().or(basic_id).filter(|c| !c.trim().is_empty()) else {
        return oauth_error("invalid_client", "Give a client_id: an org code, an org number or user:{id}.".into());
    };
    let scope = form.get("scope").map(String::as_str).filter(|s| !s.trim().is_empty());
    let client = client.trim();
    let claims = if let Some(user) = client.strip_prefix("user:") {
        match user.parse::<u64>() {
            Ok(user_id) => Ok(user_claims(&p, user_id, None, 2, scope)),
            Err(_) => Err(ApiError::BadRequest("user:{id} takes a numeric user id.".into())),
        }
    } else if client.len() == 9 && client.bytes().all(|b| b.is_ascii_digit()) {
        org_token_claims(&p, None, Some(client.to_owned()), scope)
    } else {
        org_token_claims(&p, Some(client.to_owned()), None, scope)
    };
    let token = match claims.and_then(|c| p.sign(p.timed(p.issuer(), c))) {
        Ok(token) => token,
        Err(e) => return oauth_error("invalid_client", e.to_string()),
    };
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_SECONDS, "scope": scope.unwrap_or_default()}))
        .into_response()
}

fn url_decode(v: &str) -> String {
    url::form_urlencoded::parse(format!("x={v}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

#[derive(Deserialize)]
struct PlatformTokenQuery {
    issuer: Option<String>,
    app: Option<String>,
}

/// `GET /localtest/token/platform?issuer=ttd&app=apps-test`
async fn platform_token(State(p): P, Query(q): Query<PlatformTokenQuery>) -> Result<Response, ApiError> {
    let issuer = q.issuer.unwrap_or_else(|| "ttd".into());
    let app = q.app.unwrap_or_else(|| "apps-test".into());
    let mut claims = Map::new();
    claims.insert("urn:altinn:app".into(), json!(app));
    Ok(text(p.sign(p.timed(issuer, claims))?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MaskinportenQuery {
    org_number: String,
    scope: Option<String>,
    /// Makes it a system user's token (`authorization_details`).
    system_user_id: Option<String>,
}

/// `GET /localtest/token/maskinporten?orgNumber=991825827&scope=...`: a
/// Maskinporten-style token that the exchange endpoint accepts.
async fn maskinporten_token(State(p): P, Query(q): Query<MaskinportenQuery>) -> Result<Response, ApiError> {
    let mut claims = Map::new();
    claims.insert(
        "consumer".into(),
        json!({"authority": "iso6523-actorid-upis", "ID": format!("0192:{}", q.org_number)}),
    );
    claims.insert("scope".into(), json!(q.scope.unwrap_or_default()));
    claims.insert("client_id".into(), json!(format!("localtest-{}", q.org_number)));
    if let Some(id) = &q.system_user_id {
        claims.insert("authorization_details".into(), system_user_details(id, &q.org_number));
    }
    Ok(text(p.sign(p.timed(p.maskinporten_issuer(), claims))?))
}

/// `GET /authentication/api/v1/exchange/maskinporten` with the Maskinporten
/// token as bearer → an Altinn token with the same scopes.
async fn exchange_maskinporten(State(p): P, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = crate::api::extract::token_from_headers(&headers)
        .ok_or_else(|| ApiError::Unauthorized("Missing Maskinporten bearer token.".into()))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[p.maskinporten_issuer()]);
    validation.validate_aud = false;
    let claims = p
        .keys
        .decoding_keys()
        .iter()
        .find_map(|k| jsonwebtoken::decode::<Map<String, Value>>(token, k, &validation).ok())
        .ok_or_else(|| ApiError::Unauthorized("The Maskinporten token is not valid.".into()))?
        .claims;
    let org_number = claims
        .get("consumer")
        .and_then(|c| c.get("ID"))
        .and_then(Value::as_str)
        .and_then(|id| id.rsplit(':').next())
        .ok_or_else(|| ApiError::Unauthorized("The Maskinporten token names no consumer.".into()))?
        .to_owned();
    let org = p.dataset.service_owner_by_number(&org_number).map(|o| o.org.clone());
    let scope = claims.get("scope").and_then(Value::as_str);
    let mut altinn = org_claims(org.as_deref(), &org_number, scope);
    // A system user's token stays a system user's.
    if let Some(details) = claims.get("authorization_details") {
        altinn.insert("authorization_details".into(), details.clone());
    }
    Ok(text(p.sign(p.timed(p.issuer(), altinn))?))
}

async fn decision(State(p): P, headers: HeaderMap, Json(root): Json<XacmlRoot>) -> Response {
    p.pdp_requests.fetch_add(1, Ordering::SeqCst);
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    *p.last_pdp_traceparent.lock().expect("traceparent lock") = traceparent;
    Json(pdp::decide(&p.dataset, &root.request)).into_response()
}

#[derive(Deserialize)]
struct PartyLookup {
    #[serde(rename = "OrgNo", alias = "orgNo")]
    org_no: Option<String>,
    #[serde(rename = "Ssn", alias = "ssn")]
    ssn: Option<String>,
}

/// Register's party lookup: `{"OrgNo": ".."}` or `{"Ssn": ".."}` → the party.
async fn party_lookup(State(p): P, Json(q): Json<PartyLookup>) -> Response {
    let found = match (&q.org_no, &q.ssn) {
        (Some(org_no), None) => p
            .dataset
            .organisations
            .iter()
            .find(|o| &o.org_number == org_no)
            .map(|o| json!({"PartyId": o.party_id, "PartyTypeName": 2, "OrgNumber": o.org_number, "Name": o.name})),
        (None, Some(ssn)) => p
            .dataset
            .persons
            .iter()
            .find(|x| &x.ssn == ssn)
            .map(|x| json!({"PartyId": x.party_id, "PartyTypeName": 1, "SSN": x.ssn, "Name": x.name})),
        _ => {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "give exactly one of OrgNo or Ssn"})))
                .into_response();
        }
    };
    match found {
        Some(party) => Json(party).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!([]))).into_response(),
    }
}

#[derive(Deserialize)]
struct PartyQuery {
    #[serde(alias = "Data")]
    data: Vec<String>,
}

/// Register's party query (`v2/internal/parties/query?fields=identifiers`):
/// party URNs in, the identifiers of the parties Register knows out.
async fn party_query(State(p): P, Json(q): Json<PartyQuery>) -> Response {
    if q.data.len() > 100 {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "at most 100 identifiers"}))).into_response();
    }
    let found: Vec<Value> = q
        .data
        .iter()
        .filter_map(|urn| {
            if let Some(ssn) = urn.strip_prefix("urn:altinn:person:identifier-no:") {
                let x = p.dataset.persons.iter().find(|x| x.ssn == ssn)?;
                return Some(json!({"partyType": "person", "partyId": x.party_id,
                    "partyUuid": dataset::party_uuid(&x.party_uuid, x.party_id), "personIdentifier": x.ssn}));
            }
            let number = urn.strip_prefix("urn:altinn:organization:identifier-no:")?;
            let o = p.dataset.organisations.iter().find(|o| o.org_number == number)?;
            Some(json!({"partyType": "organization", "partyId": o.party_id,
                "partyUuid": dataset::party_uuid(&o.party_uuid, o.party_id), "organizationIdentifier": o.org_number}))
        })
        .collect();
    Json(json!({ "data": found })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SystemUserTokenQuery {
    system_user_id: String,
    org_number: String,
    scope: Option<String>,
}

/// The `authorization_details` claim of a system user token.
fn system_user_details(id: &str, org_number: &str) -> Value {
    json!({"type": "urn:altinn:systemuser", "systemuser_id": [id],
        "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": format!("0192:{org_number}")},
        "system_id": "localtest-system"})
}

/// `GET /localtest/token/systemuser?systemUserId={uuid}&orgNumber={orgno}[&scope=...]`:
/// an Altinn token of a system user (as the Maskinporten exchange gives).
async fn system_user_token(State(p): P, Query(q): Query<SystemUserTokenQuery>) -> Result<Response, ApiError> {
    if uuid::Uuid::parse_str(&q.system_user_id).is_err() {
        return Err(ApiError::BadRequest("systemUserId must be a UUID".into()));
    }
    if q.org_number.len() != 9 || !q.org_number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest("orgNumber must be 9 digits".into()));
    }
    let mut claims = Map::new();
    claims.insert("authorization_details".into(), system_user_details(&q.system_user_id, &q.org_number));
    claims.insert("urn:altinn:authlevel".into(), json!("3"));
    claims.insert("urn:altinn:authenticatemethod".into(), json!("maskinporten"));
    if let Some(scope) = q.scope.filter(|s| !s.trim().is_empty()) {
        claims.insert("scope".into(), json!(scope));
    }
    Ok(text(p.sign(p.timed(p.issuer(), claims))?))
}

/// `POST /localtest/webhooks/{name}`: a built-in webhook endpoint. It
/// records what it gets (the Standard Webhooks headers and the body) and
/// answers 200.
async fn receive(
    State(p): P,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let entry = json!({
        "receivedAt": crate::domain::server_time(),
        "webhookId": header("webhook-id"),
        "webhookTimestamp": header("webhook-timestamp"),
        "webhookSignature": header("webhook-signature"),
        "contentType": header("content-type"),
        // The bytes as pushed (what a signature covers), beside the parsed body.
        "rawBody": String::from_utf8_lossy(&body),
        "body": serde_json::from_slice::<Value>(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
    });
    let mut received = p.received.lock().expect("receiver lock");
    let log = received.entry(name).or_default();
    log.push_back(entry);
    while log.len() > RECEIVER_KEEPS {
        log.pop_front();
    }
    StatusCode::OK.into_response()
}

/// `GET /localtest/webhooks/{name}`: what that receiver got, newest first.
async fn receiver_log(State(p): P, axum::extract::Path(name): axum::extract::Path<String>) -> Json<Value> {
    let received = p.received.lock().expect("receiver lock");
    let entries: Vec<Value> = received.get(&name).map(|l| l.iter().rev().cloned().collect()).unwrap_or_default();
    Json(json!({"name": name, "count": entries.len(), "received": entries}))
}

async fn rotate_keys(State(p): P) -> Result<Response, ApiError> {
    let kid = p.keys.rotate().map_err(ApiError::internal)?;
    Ok(Json(json!({"kid": kid})).into_response())
}

/// Request counters of the stand-ins, for tests and curious developers.
async fn stats(State(p): P) -> Json<Value> {
    Json(json!({
        "jwks_requests": p.jwks_requests.load(Ordering::SeqCst),
        "pdp_requests": p.pdp_requests.load(Ordering::SeqCst),
        "last_pdp_traceparent": *p.last_pdp_traceparent.lock().expect("traceparent lock"),
    }))
}
