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
"""

import schemathesis
from schemathesis.generation.modes import GenerationMode

APP_OWNER = "GET /events/api/v1/app/{org}/{app}"
APP_PARTY = "GET /events/api/v1/app/party"
GENERIC = "GET /events/api/v1/events"
REPLAY = "POST /events/api/v1/subscriptions/{id}/replay"


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
