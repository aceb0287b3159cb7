//! Reading feeds over HTTP: `GET /app/{org}/{app}`, `GET /app/party`,
//! `POST /party`, `GET /events`. Each handler checks who may ask, parses the
//! parameters with Altinn's texts, hands a [`FeedQuery`] to the read use
//! case, and answers the page with a `next` link (`api/paging.rs`).
//! [`routes`] registers the handlers with their operations in the document.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::OneOfBuilder;
use utoipa::openapi::{RefOr, Required, Schema};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{ApiPath, OptionalJsonBody};
use super::paging::{CloudEvent, NextQuery, PageParams, next_link, page_response, size_param, start, wait_param};
use super::routes::{APP_OWNER, APP_PARTY, EVENTS, PARTY};
use super::schema::{
    add_rules, any_of_required, array, date_time, dev, integer, one_of_required, param, repeated, string,
};
use super::state::AppState;
use crate::authz::{Action, Caller};
use crate::domain::query::{MAX_LIST_VALUES, MAX_VALUE_LEN, PartyRule, RawParams, app_query, generic_query};
use crate::domain::{FeedId, Filters, Principal};
use crate::read::{FeedQuery, Page, Paging};

pub const SCOPE_SUBSCRIBE: &str = "altinn:events.subscribe";
const APP_RESOURCE_PREFIX: &str = "urn:altinn:resource:app_";
pub const SCOPE_INSTANCES_READ: &str = "altinn:serviceowner/instances.read";
pub const SCOPE_SERVICE_OWNER: &str = "altinn:serviceowner";
const PERSON_HEADER: &str = "person";
/// An organisation number, as `domain::query` takes it.
const UNIT_PATTERN: &str = "^[0-9]{9}$";
/// A national identity number, as `domain::query` takes it.
const PERSON_PATTERN: &str = "^[0-9]{11}$";
/// A resource of `GET /events`, as `domain::query` takes it.
const RESOURCE_PATTERN: &str = "^urn:altinn:resource:";
const ALT_SUBJECT_HEADER: &str = "altinn-alternativesubject";

/// The feed reads, with their operations.
pub fn routes() -> OpenApiRouter<AppState> {
    let mut routes = OpenApiRouter::new()
        .routes(routes!(generic))
        .routes(routes!(app_owner))
        .routes(routes!(app_party))
        .routes(routes!(party_post));
    // What `app_query` requires of a party query's body (and of a query
    // string, which OpenAPI cannot say: the parameters' descriptions do).
    let rules = [any_of_required(&["after", "from"]), one_of_required(&["party", "unit", "person"])];
    add_rules(routes.get_openapi_mut(), "PartyQueryBody", rules);
    routes
}

/// The filters of the app event queries and whose events they are (at
/// most one of `party`, `unit` and the `person` header), as
/// `domain::query::app_query` parses them.
struct AppEventParams;

impl IntoParams for AppEventParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            param(
                ParameterIn::Query,
                "from",
                date_time(),
                "Events at or after this time (with timezone; years 0000-9999 in UTC). `from` or `after` \
                 is required.",
            )
            .build(),
            param(ParameterIn::Query, "to", date_time(), "Events at or before this time (with timezone).").build(),
            repeated("type", "Event types to include (repeat for several; `%` and `_` as in SQL `LIKE`).").build(),
            param(ParameterIn::Query, "party", integer().minimum(Some(0)), "A party id.")
                .example(Some(json!(dev::PARTY)))
                .build(),
            param(ParameterIn::Query, "unit", string().pattern(Some(UNIT_PATTERN)), "An organisation number.").build(),
            param(
                ParameterIn::Header,
                PERSON_HEADER,
                string().pattern(Some(PERSON_PATTERN)),
                "A national identity number (a header, so it stays out of URLs).",
            )
            .build(),
        ]
    }
}

/// `source` of `GET /app/party`.
struct SourceParam;

impl IntoParams for SourceParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![repeated("source", "Sources to include (repeat for several; `%` and `_` as in SQL `LIKE`).").build()]
    }
}

/// The parameters of `GET /events`, as `domain::query::generic_query`
/// parses them (at most one of `subject` and the alternative subject).
struct GenericParams;

impl IntoParams for GenericParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let field = || string().max_length(Some(MAX_VALUE_LEN));
        vec![
            param(
                ParameterIn::Query,
                "resource",
                field().pattern(Some(RESOURCE_PATTERN)),
                "The resource: `urn:altinn:resource:...`.",
            )
            .required(Required::True)
            .example(Some(json!(dev::RESOURCE)))
            .build(),
            param(
                ParameterIn::Query,
                "after",
                string().pattern(Some("\\S")),
                "Where to continue: `0` for the beginning, a cursor from `next` (`c1.…`), or an event id. \
                 Required here (Altinn's rule).",
            )
            .required(Required::True)
            .example(Some(json!("0")))
            .build(),
            param(ParameterIn::Query, "subject", field(), "Only events with this subject.").build(),
            param(ParameterIn::Query, "alternativeSubject", field(), "Only events with this alternative subject.")
                .build(),
            param(
                ParameterIn::Header,
                "Altinn-AlternativeSubject",
                field(),
                "The same as the parameter (Altinn's header; it wins over the parameter).",
            )
            .build(),
            repeated("type", "Event types to include (repeat for several; `%` and `_` as in SQL `LIKE`).").build(),
            size_param(None).build(),
            wait_param().build(),
        ]
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `GET /events/api/v1/app/{org}/{app}`: the app owner's feed of its app.
#[utoipa::path(
    get, path = APP_OWNER, tag = "Read", operation_id = "getAppEvents",
    summary = "The app owner's feed of one app",
    description = "An org token with scope `altinn:events/{org}/{app}` (or `altinn:serviceowner/instances.read`). With `party`, `unit` or `person` it narrows to one party.",
    params(
        ("org" = String, Path, example = "ttd", description = "The app owner's org code."),
        ("app" = String, Path, example = "apps-test", description = "The app's name."),
        AppEventParams,
        PageParams,
    ),
    responses(
        (status = 200, description = "A page of events in feed order, possibly empty. Follow `next` for the rest; it is always present.", body = Vec<CloudEvent>, headers(("next" = String, description = "The URL of the next page (the same query, `after` set past everything this page scanned)."))),
        (status = 400, description = "A parameter is not valid (Altinn's texts).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Long-polling (`wait`): this caller already holds its share of waiting requests.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = i64, description = "Seconds to wait."))),
        (status = 403, description = "The token lacks the app's scope.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Register knows no party with that organisation or identity number.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn app_owner(
    State(state): State<AppState>,
    ApiPath((org, app)): ApiPath<(String, String)>,
    principal: Principal,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    if principal.org().is_none() {
        return Err(ApiError::Unauthorized("Only orgs can call this api".into()));
    }
    // The scope of the architecture scenario, or Altinn's service-owner
    // scopes; the PDP still decides per event (another owner's app: denied).
    let scoped =
        [format!("altinn:events/{org}/{app}"), SCOPE_INSTANCES_READ.to_owned(), SCOPE_SERVICE_OWNER.to_owned()]
            .iter()
            .any(|s| principal.has_scope(s));
    if !scoped {
        return Err(ApiError::Forbidden(format!("The token lacks the scope altinn:events/{org}/{app}.")));
    }
    let mut raw = RawParams::from_query(uri.query());
    raw.person = header_str(&headers, PERSON_HEADER);
    let q = app_query(&raw, PartyRule::Optional).map_err(ApiError::BadRequest)?;
    let resource = format!("urn:altinn:resource:app_{org}_{app}");
    let mut filters = Filters { from_time: q.from.clone(), to_time: q.to, types: q.types, ..Filters::default() };
    // A party narrows to its subject feed; otherwise the app's resource feed.
    let feed = match &q.party {
        Some(p) => {
            filters.resource = Some(resource);
            FeedId::Subject(format!("/party/{}", state.reader.party(p).await?))
        }
        None => FeedId::Resource(resource),
    };
    let paging = Paging { start: start(&state, &feed, q.after, q.from)?, size: q.size, wait: q.wait };
    let query = FeedQuery {
        feed,
        filters,
        paging,
        caller: Some(Caller::Principal(&principal)),
        action: Action::Read,
        holder: principal.key(),
        shared: false,
    };
    let feed = query.feed.clone();
    let page = state.reader.read(query).await?;
    let next = next_link(&state, &uri, NextQuery::Same, &feed, page.next, &[])?;
    Ok(page_response(page, next, "application/json"))
}

async fn party_query(state: &AppState, principal: &Principal, raw: RawParams) -> Result<(FeedId, Page), ApiError> {
    let q = app_query(&raw, PartyRule::Required).map_err(ApiError::BadRequest)?;
    let party = state.reader.party(q.party.as_ref().expect("required above")).await?;
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
    let feed = FeedId::Subject(format!("/party/{party}"));
    let paging = Paging { start: start(state, &feed, q.after, q.from)?, size: q.size, wait: q.wait };
    let query = FeedQuery {
        feed: feed.clone(),
        filters,
        paging,
        caller: Some(Caller::Principal(principal)),
        action: Action::Read,
        holder: principal.key(),
        shared: false,
    };
    Ok((feed, state.reader.read(query).await?))
}

/// `GET /events/api/v1/app/party`: what is new for one party.
#[utoipa::path(
    get, path = APP_PARTY, tag = "Read", operation_id = "getPartyEvents",
    summary = "App events about one party",
    description = "One of `party`, `unit` and (header) `person` is required.",
    params(
        AppEventParams,
        SourceParam,
        PageParams,
    ),
    responses(
        (status = 200, description = "A page of events in feed order, possibly empty. Follow `next` for the rest; it is always present.", body = Vec<CloudEvent>, headers(("next" = String, description = "The URL of the next page (the same query, `after` set past everything this page scanned)."))),
        (status = 400, description = "A parameter is not valid (Altinn's texts).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Long-polling (`wait`): this caller already holds its share of waiting requests.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = i64, description = "Seconds to wait."))),
        (status = 404, description = "Register knows no party with that organisation or identity number.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn app_party(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut raw = RawParams::from_query(uri.query());
    raw.person = header_str(&headers, PERSON_HEADER);
    let (feed, page) = party_query(&state, &principal, raw).await?;
    let next = next_link(&state, &uri, NextQuery::Same, &feed, page.next, &[])?;
    Ok(page_response(page, next, "application/json"))
}

/// The body of `POST /events/api/v1/party`: the party query of
/// `GET /app/party`, with identity numbers out of the URL. Other fields are
/// refused.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PartyQueryBody, examples(json!({"person": dev::PERSON, "after": "0", "size": 10})))]
struct PartyBody {
    /// A party id: a number, or a string of digits. Exactly one of
    /// `party`, `unit` and `person` (`null` or blank counts as none).
    #[schema(schema_with = party_id)]
    party: Option<Value>,
    /// An organisation number.
    #[schema(nullable = false, pattern = "^[0-9]{9}$")]
    unit: Option<String>,
    /// A national identity number.
    #[schema(nullable = false, pattern = "^[0-9]{11}$")]
    person: Option<String>,
    /// Where to continue: `0`, a cursor from `next`, or an event id. `after`
    /// or `from` is required.
    #[schema(nullable = false, pattern = "\\S")]
    after: Option<String>,
    /// Events at or after this time (with timezone; years 0000-9999 in UTC).
    #[schema(nullable = false, format = DateTime)]
    from: Option<String>,
    #[schema(format = DateTime)]
    to: Option<String>,
    /// Sources to include (`%` and `_` as in SQL `LIKE`).
    #[serde(default)]
    #[schema(schema_with = bounded_list)]
    source: Vec<String>,
    /// Event types to include (`%` and `_` as in SQL `LIKE`).
    #[serde(rename = "type", default)]
    #[schema(schema_with = bounded_list)]
    types: Vec<String>,
    #[schema(value_type = Option<i64>, minimum = 1)]
    size: Option<Value>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 30)]
    wait: Option<Value>,
}

/// A party id as `POST /party` takes it: a number or a string of digits.
fn party_id() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(integer().minimum(Some(0)))
        .item(string().pattern(Some("^[0-9]+$")).description(Some("Digits only.")))
        .description(Some("A party id: a number, or a string of digits."))
        .into()
}

/// `source` or `type` of the body, with the bounds `domain::query` keeps.
fn bounded_list() -> RefOr<Schema> {
    array(string().max_length(Some(MAX_VALUE_LEN))).max_items(Some(MAX_LIST_VALUES)).into()
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
#[utoipa::path(
    post, path = PARTY, tag = "Read", operation_id = "postPartyEvents",
    summary = "App events about one party, the query in the body",
    description = "Ours: the party query of `GET /app/party` with its fields in a JSON body, so identity numbers stay out of URLs and logs. `next` carries only the cursor; send the same body with it.",
    params(
        ("after" = Option<String>, Query, description = "A cursor from `next`; wins over the body's `after`."),
        ("wait" = Option<i64>, Query, minimum = 0, maximum = 30, description = "Long-poll seconds; wins over the body's."),
    ),
    request_body(content = PartyBody, content_type = "application/json"),
    responses(
        (status = 200, description = "A page of events in feed order, possibly empty. Follow `next` for the rest; it is always present.", body = Vec<CloudEvent>, headers(("next" = String, description = "The URL of the next page (the same query, `after` set past everything this page scanned)."))),
        (status = 400, description = "A field is not valid (Altinn's texts).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Long-polling (`wait`): this caller already holds its share of waiting requests.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = i64, description = "Seconds to wait."))),
        (status = 404, description = "Register knows no party with that organisation or identity number.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The AltinnStudioRuntime cookie without same-origin proof (send `Authorization: Bearer`).", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not declared JSON (`application/json`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
pub async fn party_post(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
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
    let (feed, page) = party_query(&state, &principal, raw).await?;
    let next = next_link(&state, &uri, NextQuery::CursorOnly, &feed, page.next, &[])?;
    Ok(page_response(page, next, "application/json"))
}

/// `GET /events/api/v1/events`: a resource's generic events, for
/// subscribers the PDP permits.
#[utoipa::path(
    get, path = EVENTS, tag = "Read", operation_id = "getEvents",
    summary = "A resource's generic events",
    description = "Scope `altinn:events.subscribe`; each event is shown only if the PDP permits `subscribe` on it.",
    params(
        GenericParams,
    ),
    responses(
        (status = 200, description = "A page of events in feed order, possibly empty. Follow `next` for the rest; it is always present.", content_type = "application/cloudevents+json", body = Vec<CloudEvent>, headers(("next" = String, description = "The URL of the next page (the same query, `after` set past everything this page scanned)."))),
        (status = 400, description = "A parameter is not valid (Altinn's texts).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Long-polling (`wait`): this caller already holds its share of waiting requests.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = i64, description = "Seconds to wait."))),
        (status = 403, description = "The token lacks the scope.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = [])),
)]
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
    // The header, as Altinn takes it; `next` carries it as a parameter (as
    // Altinn's does), so that following `next` alone continues the query.
    let alt_header = header_str(&headers, ALT_SUBJECT_HEADER);
    if alt_header.is_some() {
        raw.alternative_subject = alt_header.clone();
    }
    let q = generic_query(&raw).map_err(ApiError::BadRequest)?;
    let filters = Filters {
        types: q.types,
        subject: q.subject,
        alternative_subject: q.alternative_subject,
        ..Filters::default()
    };
    let feed = FeedId::Resource(q.resource);
    let paging = Paging { start: start(&state, &feed, Some(q.after), None)?, size: q.size, wait: q.wait };
    let query = FeedQuery {
        feed: feed.clone(),
        filters,
        paging,
        caller: Some(Caller::Principal(&principal)),
        action: Action::Subscribe,
        holder: principal.key(),
        shared: false,
    };
    let page = state.reader.read(query).await?;
    let extra: Vec<(&str, &str)> = alt_header.iter().map(|v| ("alternativeSubject", v.as_str())).collect();
    let next = next_link(&state, &uri, NextQuery::Same, &feed, page.next, &extra)?;
    Ok(page_response(page, next, "application/cloudevents+json"))
}
