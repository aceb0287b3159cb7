"""What the contract fuzzer must know of a request that OpenAPI 3.1 cannot
say: rules across query parameters and headers. The document says them in
words (the parameters' descriptions; docs/api.md), and where a body holds
the same rules its schema says them (`anyOf`/`oneOf` of `required`); a query
string has no such place. Here, positive test data that breaks one of them
is not generated, so that what the fuzzer sends as valid is valid. Negative
test data is left as it is.

- The app event reads (GET /app/{org}/{app}, GET /app/party) take `from` or
  `after`, not blank (domain::query::app_query).
- They take at most one of `party`, `unit` and the `person` header; GET
  /app/party exactly one.
- GET /events takes at most one of `subject` and the alternative subject
  (the parameter or the Altinn-AlternativeSubject header).
- POST /subscriptions/{id}/replay's `after`, other than `0`, is a cursor
  this service sealed for the subscription's feed or the id of an event in
  that feed: data, not a form a schema can give. Positive cases take `0`
  (or `from`); the examples name the rest.
- POST /subscriptions takes Altinn's creation rules across its members
  (docs/api.md; subscribe::Subscriptions::create): a `sourceFilter` only as
  an app's URL in an apps domain, a generic resource without `sourceFilter`
  or `alternativeSubjectFilter`, an alternative subject that Register knows,
  `includeSubunits` only with a subject. A positive body that breaks one has
  the offending member taken out (the rest of what was generated is kept),
  since its schema cannot say them without naming the deployment's domains
  and Register's data.
"""

import schemathesis
from schemathesis.generation.modes import GenerationMode

APP_OWNER = "GET /events/api/v1/app/{org}/{app}"
APP_PARTY = "GET /events/api/v1/app/party"
GENERIC = "GET /events/api/v1/events"
REPLAY = "POST /events/api/v1/subscriptions/{id}/replay"
SUBSCRIBE = "POST /events/api/v1/subscriptions"

# Dev mode's (api::schema::dev and the local Register).
APP_RESOURCE = "urn:altinn:resource:app_ttd_apps-test"
APPS_DOMAINS = ("apps.altinn.no", "apps.tt02.altinn.no", "apps.local.altinn.cloud")
KNOWN_ALTERNATIVE_SUBJECTS = ("/person/01039012345",)


def _given(container, name):
    """Whether a parameter has a value the service reads (keys are case-insensitive)."""
    for key, value in (container or {}).items():
        if key.lower() == name.lower():
            values = value if isinstance(value, list) else [value]
            return any(v is not None and str(v).strip() for v in values)
    return False


@schemathesis.hook
def filter_case(ctx, case):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return True
    label = ctx.operation.label
    query, headers = case.query, case.headers
    if label in (APP_OWNER, APP_PARTY):
        if not (_given(query, "after") or _given(query, "from")):
            return False
        subjects = sum([_given(query, "party"), _given(query, "unit"), _given(headers, "person")])
        return subjects == 1 if label == APP_PARTY else subjects <= 1
    if label == REPLAY:
        body = case.body if isinstance(case.body, dict) else {}
        after = body.get("after")
        return after is None or str(after).strip() == "0"
    if label == GENERIC:
        alternative = _given(query, "alternativeSubject") or _given(headers, "Altinn-AlternativeSubject")
        return not (_given(query, "subject") and alternative)
    return True


def _app_of_source(source):
    """(org, app) of an app's URL in an apps domain, as the service reads it."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(source.strip())
    except ValueError:
        return None
    host = (url.hostname or "").lower()
    if url.scheme.lower() != "https" or not any(host == d or host.endswith("." + d) for d in APPS_DOMAINS):
        return None
    parts = [p for p in url.path.split("/") if p]
    return (parts[0], parts[1]) if len(parts) >= 2 else None


def _text(body, name):
    value = body.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _app_of_resource(resource):
    """(org, app) of `urn:altinn:resource:app_{org}_{app}`."""
    rest = resource[len("urn:altinn:resource:app_"):] if resource.startswith("urn:altinn:resource:app_") else None
    org, _, app = (rest or "").partition("_")
    return (org, app) if org and app else None


@schemathesis.hook
def map_case(ctx, case):
    meta = case.meta
    if (
        meta is None
        or meta.generation.mode != GenerationMode.POSITIVE
        or ctx.operation.label != SUBSCRIBE
        or not isinstance(case.body, dict)
    ):
        return case
    body = dict(case.body)
    source = _text(body, "sourceFilter")
    if source is not None and _app_of_source(source) is None:
        body.pop("sourceFilter")
        source = None
    resource = _text(body, "resourceFilter")
    app_resource = resource is not None and resource.startswith("urn:altinn:resource:app_")
    if app_resource and _app_of_resource(resource) is None and source is None:
        body["resourceFilter"] = resource = APP_RESOURCE
    if source is None and resource is None:
        body["resourceFilter"] = resource = APP_RESOURCE
        app_resource = True
    if source is not None and app_resource and _app_of_resource(resource) != _app_of_source(source):
        body.pop("resourceFilter")  # both name an app: the same one
    app = _app_of_source(source) if source is not None else _app_of_resource(resource) if app_resource else None
    alternative = _text(body, "alternativeSubjectFilter")
    if alternative is not None and (app is None or alternative not in KNOWN_ALTERNATIVE_SUBJECTS):
        body.pop("alternativeSubjectFilter")
        alternative = None
    subject = _text(body, "subjectFilter") or alternative
    if app is not None and app[0] != "ttd" and subject is None:
        # An app's events need a subject unless the caller (ttd) owns the app.
        body["subjectFilter"] = subject = "/party/1337"
    if body.get("includeSubunits") is True and subject is None:
        body["includeSubunits"] = False
    case.body = body
    return case
