#!/usr/bin/env python3
"""The webhook console (/events/console) in Debian's headless Chromium,
driven by Selenium through Debian's chromedriver, against dev mode at BASE,
every host but 127.0.0.1 unresolvable. As a consumer would: take a token,
subscribe to the dev inbox through the form (and see a refused field's
problem next to it), publish, see the delivery; subscribe a receiver that
fails once and see the failed attempt and its retry; replay; rotate the
secret; verify a pushed signature with the page's verifier (and a wrong
secret refused); delete through the confirmation. axe-core, injected into
each view, must report no serious or critical violation; the browser must
report no Content-Security-Policy violation. Screenshots of each view go
to OUT.

    console_test.py BASE OUT AXE_JS
"""
import http.server
import json
import pathlib
import sys
import threading
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, OUT, AXE = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]).read_text()
OUT.mkdir(parents=True, exist_ok=True)
APP = "urn:altinn:resource:app_ttd_apps-test"
VALIDATION = "platform.events.validatesubscription"
checked = []


def api(method, path, token=None, body=None, headers=None):
    req = urllib.request.Request(BASE + path, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}


def publish(n):
    """An event of ttd/apps-test about party 1337, as an app publishes it."""
    user = api("GET", "/localtest/token/user?userId=1337&partyId=1337&authLevel=2")[1]
    platform = api("GET", "/localtest/token/platform?issuer=ttd&app=apps-test")[1]
    source = f"https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/{n:08x}-0000-4000-8000-00000000c0{n:02x}"
    status, body, _ = api("POST", "/events/api/v1/app", user,
                           {"specversion": "1.0", "type": "app.instance.created", "subject": "/party/1337", "source": source},
                           {"PlatformAccessToken": platform})
    assert status == 201, (status, body)
    return json.loads(body)


class Receiver(http.server.BaseHTTPRequestHandler):
    """A consumer's endpoint that answers its first push (not the
    validation) 500, and every other 200."""
    got = []
    failed = False

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fail = body.get("type") != VALIDATION and not Receiver.failed
        Receiver.failed = Receiver.failed or fail
        Receiver.got.append((body.get("type"), 500 if fail else 200))
        self.send_response(500 if fail else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def until(what, check, within=30):
    deadline = time.time() + within
    while True:
        try:
            value = check()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        if time.time() > deadline:
            shot("failed")
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.25)


def shot(name):
    """The whole page (the window made as tall as the page, then as it was)."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, full + 140))
    driver.save_screenshot(str(OUT / f"console-{name}.png"))
    driver.set_window_size(width, height)


def axe(view):
    """axe-core's serious and critical violations of the page as it is."""
    driver.execute_script(AXE)
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done([{id: String(e), impact: 'critical', nodes: []}]));"
    )
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe-core, {view}: {bad}"
    checked.append(view)


def text(id_):
    return driver.find_element(By.ID, id_).text


def go(hash_):
    driver.execute_script("location.hash = arguments[0]", hash_)


def rows(table):
    return driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


def fill(id_, value):
    field = driver.find_element(By.ID, id_)
    field.clear()
    field.send_keys(value)


def create(endpoint):
    fill("f-endPoint", endpoint)
    fill("f-resourceFilter", APP)
    driver.find_element(By.CSS_SELECTOR, "#create-form button[type=submit]").click()
    until("the subscription is made", lambda: driver.find_element(By.ID, "created").is_displayed())
    return int(text("created-id")), text("created-secret")


def attempts():
    """(status, attempt) of the deliveries shown, newest first."""
    return [(r.find_elements(By.TAG_NAME, "td")[3].text, r.find_elements(By.TAG_NAME, "td")[5].text) for r in rows("deliveries")]


# The page's own headers: a strict policy, no inline script.
status, page, headers = api("GET", "/events/console")
csp = headers.get("content-security-policy", "")
assert status == 200 and "script-src 'self'" in csp and "unsafe" not in csp and "<script>" not in page, (status, csp)

receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
failing_endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/hook"

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1280,1100"):
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get(BASE + "/events/console")
    until("the page", lambda: driver.find_element(By.ID, "dev-form").is_displayed())

    # A token from the local issuer: the app owner, ttd.
    Select(driver.find_element(By.ID, "identity")).select_by_index(0)
    driver.find_element(By.ID, "dev-token").click()
    until("the token", lambda: "service owner ttd" in text("who"))

    # A refused field: the problem's detail is shown at it.
    fill("f-endPoint", "ftp://example")
    fill("f-resourceFilter", APP)
    driver.find_element(By.CSS_SELECTOR, "#create-form button[type=submit]").click()
    until("the endpoint's problem beside it", lambda: "endpoint" in text("e-endPoint").lower())
    assert driver.find_element(By.ID, "f-endPoint").get_attribute("aria-invalid") == "true"
    axe("subscriptions, with a refused field")
    shot("1-create-refused")

    # A subscription to the dev inbox, through the form.
    inbox_id, secret = create(f"{BASE}/localtest/webhooks/console")
    assert secret.startswith("whsec_"), secret
    until("it is listed", lambda: any(r.get_attribute("data-id") == str(inbox_id) for r in rows("subs-table")))
    shot("2-subscriptions")

    # An event, published, is delivered: the attempt shows.
    first = publish(1)
    go(f"#/subscriptions/{inbox_id}")

    def delivered():
        driver.find_element(By.ID, "act-refresh").click()
        time.sleep(0.3)
        return any(r.find_elements(By.TAG_NAME, "td")[1].text == first for r in rows("deliveries"))

    until("the delivery appears", delivered)
    assert attempts()[0] == ("200", "1"), attempts()
    axe("one subscription")
    shot("3-subscription")

    # An endpoint that fails once: the failed attempt, then its retry.
    go("#/subscriptions")
    until("the list", lambda: driver.find_element(By.ID, "view-subscriptions").is_displayed())
    failing_id, _ = create(failing_endpoint)
    until("validated", lambda: (VALIDATION, 200) in Receiver.got)
    publish(2)
    go(f"#/subscriptions/{failing_id}")

    def retried():
        driver.find_element(By.ID, "act-refresh").click()
        time.sleep(0.3)
        return ("200", "2") in attempts() and ("500", "1") in attempts()

    until("the failed attempt and the retry", retried, within=60)
    assert driver.find_elements(By.CSS_SELECTOR, "#chart rect[fill='#a4161a']"), "the failure in the chart"
    shot("4-failed-and-retried")

    # Replay the inbox subscription from the start: the event comes again.
    go(f"#/subscriptions/{inbox_id}")
    until("its page", lambda: text("sub-title") == f"Subscription {inbox_id}")
    before = json.loads(api("GET", "/localtest/webhooks/console")[1])["count"]
    fill("replay-value", "0")
    driver.find_element(By.CSS_SELECTOR, "#replay-form button[type=submit]").click()
    until("replayed", lambda: json.loads(api("GET", "/localtest/webhooks/console")[1])["count"] > before)

    # Rotate the secret: the new one, once, with the overlap explained.
    driver.find_element(By.ID, "act-rotate").click()
    until("the new secret", lambda: driver.find_element(By.ID, "rotated").is_displayed())
    rotated = text("rotated-secret")
    assert rotated.startswith("whsec_") and rotated != secret and "24 hours" in text("rotated"), rotated
    shot("5-rotated")

    # A push after the rotation, verified with the page's verifier from the inbox.
    third = publish(3)
    until("the push", lambda: any(r["body"].get("id") == third
                                  for r in json.loads(api("GET", "/localtest/webhooks/console")[1])["received"]))
    go("#/inbox")
    until("the inbox", lambda: driver.find_element(By.ID, "view-inbox").is_displayed())
    driver.find_element(By.CSS_SELECTOR, "#inbox-form button[type=submit]").click()
    until("the pushes listed", lambda: third in driver.find_element(By.ID, "inbox-list").text)
    axe("dev inbox")
    shot("6-inbox")
    driver.find_element(By.CSS_SELECTOR, "#inbox-list li button").click()
    until("the verifier, filled in", lambda: driver.find_element(By.ID, "view-verify").is_displayed()
          and driver.find_element(By.ID, "v-id").get_attribute("value"))
    for key, verdict in ((rotated, "Verifies"), (secret, "Verifies"), ("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUE=", "Does not verify")):
        fill("v-secret", key)
        driver.find_element(By.CSS_SELECTOR, "#verify-form button[type=submit]").click()
        until(f"the verdict {verdict}", lambda: text("verify-result").startswith(verdict))
        if key == rotated:
            axe("verify a signature")
            shot("7-verified")

    # Delete, through the confirmation.
    go("#/subscriptions")
    until("the list", lambda: any(r.get_attribute("data-id") == str(failing_id) for r in rows("subs-table")))
    driver.find_element(By.CSS_SELECTOR, f"#subs-table tr[data-id='{failing_id}'] button.danger").click()
    until("the confirmation", lambda: driver.find_element(By.ID, "confirm").is_displayed())
    axe("delete confirmation")
    shot("8-confirm-delete")
    driver.find_element(By.ID, "confirm-ok").click()
    until("gone from the list", lambda: not any(r.get_attribute("data-id") == str(failing_id) for r in rows("subs-table")))
    owner = api("GET", "/localtest/token/org?org=ttd&scope=altinn:events/ttd/apps-test")[1]
    assert api("GET", f"/events/api/v1/subscriptions/{failing_id}", owner)[0] == 404
    # Escape on the next confirmation deletes nothing (the last one's "ok"
    # does not count again).
    driver.find_element(By.CSS_SELECTOR, f"#subs-table tr[data-id='{inbox_id}'] button.danger").click()
    until("the confirmation", lambda: driver.find_element(By.ID, "confirm").is_displayed())
    webdriver.ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    until("closed", lambda: not driver.find_element(By.ID, "confirm").is_displayed())
    time.sleep(0.5)
    assert api("GET", f"/events/api/v1/subscriptions/{inbox_id}", owner)[0] == 200, "Escape deleted it"

    # A narrow screen: nothing wider than it but the scrolling tables.
    driver.set_window_size(390, 900)
    time.sleep(0.3)
    overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = driver.execute_script(
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
        "document.documentElement.clientWidth + 1 && !e.parentElement.closest('.scroll, pre')).slice(0, 8)"
        ".map(e => e.tagName + '#' + e.id + '.' + e.className + ':' + Math.round(e.getBoundingClientRect().right))")
    sizes = driver.execute_script("return [innerWidth, document.documentElement.clientWidth, document.documentElement.scrollWidth, document.body.scrollWidth]")
    assert overflow <= 1, f"the page is {overflow}px wider than a narrow screen: {wide} {sizes}"
    shot("9-narrow")

    csp_errors = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not csp_errors, csp_errors
finally:
    driver.quit()
    receiver.shutdown()

print(f"console test passed: axe-core found no serious or critical violation in {len(checked)} views "
      f"({', '.join(checked)}); screenshots in {OUT}")
