"""The supervisor console, served for real (uvicorn) on calls recorded from real sessions:
login and its guards, roles, the dashboard's figures, calls, recordings, the review queue
feeding a temporary copy of kb/, retraining; and the same in a real browser (Playwright
driving Debian's chromium)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import re
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from pg_server import free_port
from transcript_calls import run_call

from callbot.config import Config, ConsoleUser
from callbot.console.app import create_app
from callbot.console.auth import COOKIE
from callbot.console.kbedit import phrasing_text
from callbot.console.passwords import hash_password, verify_password
from callbot.console.review import cluster
from callbot.intents import IntentClassifier, kb_digest
from callbot.kb import check_kb, load_kb
from callbot.transcripts import open_store

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
LOST = "on est partis de la rue du port"                         # rejected by the classifier
PAUME = "j'ai paumé le numéro à neuf chiffres de ma société"     # understood, barely
CALLS = [
    ("c-resolved", [("say", "comment je trouve mon code ape"), ("say", "au revoir")]),
    ("c-advisor", [("say", "je voudrais parler à un conseiller")]),
    ("c-siren", [("say", "je n'ai jamais reçu mon numéro siren"),
                 ("say", "sept cent trente deux huit cent vingt neuf trois cent vingt")]),
    ("c-silent", []),
    ("c-hangup", [("say", "comment je trouve mon code ape"), ("hangup",)]),
    ("c-lost", [("say", LOST), ("say", "la météo de demain à paris")]),
    ("c-paume", [("say", PAUME), ("hangup",)]),
]


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@contextmanager
def serving(app):
    """The app on a free loopback port, trusting X-Forwarded-Proto from 127.0.0.1 like
    `callbot console` does."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off",
                                           proxy_headers=True, forwarded_allow_ips="127.0.0.1"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("the console server did not start", pytrace=False)
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], text: str):
        self.status, self.headers, self.text = status, headers, text

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


class Client:
    """A tiny HTTP client that keeps the session cookie and never follows redirects."""

    def __init__(self, base: str):
        u = urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.token: str | None = None

    def request(self, method: str, path: str, form: dict | list | None = None,
                headers: dict | None = None) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        hdrs = dict(headers or {})
        body = None
        if form is not None:
            body = urlencode(form, doseq=True)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if self.token:
            hdrs["Cookie"] = f"{COOKIE}={self.token}"
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        resp = Response(r.status, r.getheaders(), r.read().decode("utf-8", "replace"))
        conn.close()
        for c in resp.cookies():
            name, _, rest = c.partition("=")
            if name == COOKIE:
                value = rest.split(";", 1)[0].strip('"')
                self.token = value or None
        return resp

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict | list, **kw) -> Response:
        return self.request("POST", path, form=form, **kw)

    def csrf(self, path: str = "/login") -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.get(path).text)
        assert m, f"no CSRF token on {path}"
        return m.group(1)

    def login(self, name: str, password: str | None = None) -> Response:
        token = self.csrf("/login")
        return self.post("/login", {"csrf": token, "name": name,
                                    "password": password or PASSWORDS[name], "next": "/"})


@dataclasses.dataclass
class Site:
    base: str
    config: Config
    store: object
    kb_root: Path
    model: Path
    real_kb: str
    real_model: str


def _site_config(config: Config, root: Path, **console) -> Config:
    users = tuple(ConsoleUser(n, r, hash_password(PASSWORDS[n]))
                  for n, r in (("alice", "editor"), ("bob", "readonly")))
    return dataclasses.replace(
        config,
        paths=dataclasses.replace(config.paths, kb=root / "kb", models=root / "models",
                                  data=root / "data"),
        transcripts=dataclasses.replace(config.transcripts, url=""),
        recording=dataclasses.replace(config.recording, enabled=True),
        console=dataclasses.replace(config.console, users=users, retrain_folds=2,
                                    page_size=4, **console))


@pytest.fixture(scope="module")
def site(config, text_engines, tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    shutil.copytree(config.paths.kb, root / "kb")
    (root / "models").mkdir()
    real_model = config.paths.models / config.nlu.model
    shutil.copy2(real_model, root / "models" / config.nlu.model)
    cfg = _site_config(config, root)
    store = open_store(cfg)
    for i, (call_id, steps) in enumerate(CALLS):
        run_call(text_engines, store, call_id, steps, caller=f"+3361234567{i}")
    run_call(text_engines, store, "c-old", [("say", "au revoir")], caller="+33699999999",
             started_at=time.time() - 40 * 86400)
    assert store.flush()
    with serving(create_app(cfg, store)) as base:
        yield Site(base, cfg, store, root / "kb", root / "models" / config.nlu.model,
                   _fingerprint(config.paths.kb), hashlib.sha256(real_model.read_bytes()
                                                                ).hexdigest())
    store.close()


# --- login, sessions, CSRF, roles ---------------------------------------------------------

def test_login_required_cookie_and_security_headers(site):
    c = Client(site.base)
    r = c.get("/calls?outcome=resolved")
    assert r.status == 303 and r.header("location") == "/login?next=%2Fcalls%3Foutcome%3Dresolved"
    r = c.get("/login")
    assert r.status == 200
    cookie = r.cookies()[0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    csp = r.header("content-security-policy")
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert r.header("x-frame-options") == "DENY" and r.header("cache-control") == "no-store"
    anonymous = c.token
    r = c.login("alice")
    assert r.status == 303 and r.header("location") == "/"
    assert c.token and c.token != anonymous             # a new session at login
    page = c.get("/")
    assert page.status == 200 and "alice · editor" in page.text
    # every asset is local: no scheme-relative or absolute URL in src/href
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    css = c.get("/static/console.css")
    assert css.status == 200 and "text/css" in css.header("content-type")
    logged_in = c.token
    assert c.post("/logout", {"csrf": c.csrf("/")}).status == 303
    assert c.token is None                              # the cookie is cleared...
    c.token = logged_in
    assert c.get("/").status == 303                     # ...and the session is gone


def test_secure_cookie_behind_https(site):
    c = Client(site.base)
    r = c.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in r.cookies()[0]


def test_csrf_and_read_only_role(site):
    bob = Client(site.base)
    assert bob.login("bob").status == 303
    form = {"item": "c-lost|2", "action": "dismiss"}
    assert bob.post("/review", form).status == 400                  # no CSRF token
    assert bob.post("/review", {**form, "csrf": "forged"}).status == 400
    r = bob.post("/review", {**form, "csrf": bob.csrf("/review")})
    assert r.status == 403 and "read-only" in r.text
    assert bob.post("/retrain", {"csrf": bob.csrf("/review")}).status == 403
    review = bob.get("/review")
    assert LOST in review.text and 'value="assign"' not in review.text
    call = bob.get("/call?id=c-resolved")
    assert "+33612345670" not in call.text and "•••••••••70" in call.text
    calls = bob.get("/calls")
    assert "+3361234567" not in calls.text
    alice = Client(site.base)
    alice.login("alice")
    assert "+33612345670" in alice.get("/call?id=c-resolved").text
    # a login form without its token is refused too
    assert Client(site.base).post("/login", {"name": "alice",
                                             "password": PASSWORDS["alice"]}).status == 400


def test_lockout_after_repeated_failures(site):
    cfg = dataclasses.replace(site.config, console=dataclasses.replace(
        site.config.console, max_failures=3, lockout_minutes=15))
    with serving(create_app(cfg, site.store)) as base:
        c = Client(base)
        assert c.login("alice", "wrong").status == 401
        assert c.login("alice", "wrong again").status == 401
        r = c.login("alice", "still wrong")
        assert r.status == 429 and "Too many failed attempts" in r.text
        r = c.login("alice")                        # even the right password now
        assert r.status == 429
        assert Client(base).login("bob").status == 429    # the address is locked too
    assert Client(site.base).login("alice").status == 303  # another console: not locked


def test_password_hash_command():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "callbot", "console", "hash-password"],
                       input="a long enough password\n", capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    hashed = r.stdout.strip()
    assert hashed.startswith("scrypt$131072$8$1$") and verify_password("a long enough password", hashed)
    assert not verify_password("another password", hashed)
    assert "[[console.users]]" in r.stderr
    r = subprocess.run([sys.executable, "-m", "callbot", "console", "hash-password"],
                       input="short\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "at least" in r.stderr


# --- dashboard and calls --------------------------------------------------------------------

def test_dashboard_figures(site):
    c = Client(site.base)
    c.login("alice")
    s = json.loads(c.get("/api/stats?days=7").text)
    recent = [cid for cid, _ in CALLS]
    calls = {cid: site.store.get_call(cid) for cid in recent}
    turns = [t for cid in recent for t in site.store.turns(cid)]
    assert s["calls"] == len(CALLS) == s["closed"]
    contained = [cid for cid, call in calls.items() if call["outcome"] == "resolved"
                 or (call["outcome"] == "caller_hangup" and call["answers"] > 0)]
    # c-paume: understood barely, answered with its topic named, then the caller hung up
    assert sorted(contained) == ["c-hangup", "c-paume", "c-resolved"]
    assert s["containment_rate"] == pytest.approx(3 / len(CALLS))
    assert s["outcomes"] == {"resolved": 1, "transferred": 3, "caller_hangup": 2,
                             "no_input": 1, "error": 0}
    assert sorted(map(tuple, s["transfers"])) == [("caller_request", 1),
                                                  ("not_understood", 1), ("personal_case", 1)]
    assert s["top_intents"][0] == ["connaitre_code_ape", 2]
    understood = [t for t in turns if t["decision"] in ("confident", "confirm", "reject")]
    assert s["utterances"] == len(understood)
    assert s["not_understood"] == sum(t["decision"] == "reject" for t in turns) >= 2
    lat = [t["latency_ms"] for t in turns if t["latency_ms"] is not None]
    assert s["latency_n"] == len(lat) >= 8
    assert s["latency_p50_ms"] == pytest.approx(float(np.percentile(lat, 50)))
    assert s["latency_p95_ms"] == pytest.approx(float(np.percentile(lat, 95)))
    assert len(s["per_day"]) == 7 and s["per_day"][-1][1] == len(CALLS)
    assert json.loads(c.get("/api/stats?days=90").text)["calls"] == len(CALLS) + 1
    page = c.get("/?days=7").text
    assert page.count("<svg") >= 5
    assert f'id="kpi-containment">{100 * 3 / len(CALLS):.1f} %' in page


def test_calls_filters_paging_and_call_page(site):
    c = Client(site.base)
    c.login("alice")
    r = c.get("/calls")
    assert "8 call(s), page 1 of 2" in r.text and r.text.count("/call?id=") == 4
    assert "page=2" in r.text
    assert c.get("/calls?page=2").text.count("/call?id=") == 4
    r = c.get("/calls?outcome=transferred")
    assert "3 call(s)" in r.text
    assert all(x in r.text for x in ("c-advisor", "c-siren", "c-lost"))
    r = c.get("/calls?intent=connaitre_code_ape")
    assert "2 call(s)" in r.text
    r = c.get("/calls?intent=connaitre_code_ape&min_confidence=0.9999")
    assert "0 call(s)" in r.text
    today = time.strftime("%Y-%m-%d")
    assert "7 call(s)" in c.get(f"/calls?from={today}&to={today}").text
    r = c.get("/calls?from=yesterday")
    assert "YYYY-MM-DD" in r.text and r.status == 200
    r = c.get("/call?id=c-siren")
    assert "siren_non_recu" in r.text and "personal_case" in r.text
    assert "SIREN 732829320" in r.text and "<audio" in r.text
    assert c.get("/call?id=nope").status == 404


def test_recording_is_served_to_editors(site):
    c = Client(site.base)
    c.login("alice")
    r = c.request("GET", "/call/recording?id=c-resolved")
    assert r.status == 200 and r.header("content-type") == "audio/wav"
    assert c.get("/call/recording?id=nope").status == 404
    bob = Client(site.base)
    bob.login("bob")
    r = bob.get("/call/recording?id=c-resolved")
    assert r.status == 403 and "read-only" in r.text


# --- review queue and knowledge base ------------------------------------------------------

def test_review_queue_groups_similar_utterances():
    items = [{"call_id": "c", "seq": i, "text": t, "at": i, "decision": "reject",
              "alternatives": [["hors_sujet", .9], ["obtenir_kbis", .1]]}
             for i, t in enumerate(["je voudrais payer mes cotisations urssaf",
                                    "cotisations ursaf comment payer",
                                    "payer cotisations urssaf", "quelle heure ouvre la mairie",
                                    "la mairie ouvre à quelle heure",
                                    "payer cotisations urssaf"])]
    groups = cluster(items)
    assert [g.size for g in groups] == [4, 2]
    assert {v.text for v in groups[0].variants} == {
        "je voudrais payer mes cotisations urssaf", "cotisations ursaf comment payer",
        "payer cotisations urssaf"}
    assert groups[0].variants[0].count == 2               # identical utterances shown once
    assert groups[0].suggestion == "obtenir_kbis" and groups[0].preselect is None


def test_assign_out_of_scope_and_dismiss(site):
    c = Client(site.base)
    c.login("alice")
    queue = site.store.review_candidates(site.config.console.review_below)
    by_text = {q["text"]: q for q in queue}
    assert {LOST, PAUME, "la météo de demain à paris"} <= set(by_text)
    paume = by_text[PAUME]
    token = c.csrf("/review")
    r = c.post("/review", {"csrf": token, "item": f"{paume['call_id']}|{paume['seq']}",
                           "action": "assign", "intent": "retrouver_siren_siret"})
    assert r.status == 303
    text = (site.kb_root / "phrasings" / "retrouver_siren_siret.txt").read_text()
    day = time.strftime("%Y-%m-%d")
    assert text.endswith(f"# console {day} by alice, call c-paume\n{phrasing_text(PAUME)}\n")
    flash = c.get("/review").text
    assert "added to retrouver_siren_siret" in flash and PAUME not in flash.split("Recently")[0]
    assert 'id="kb-changed"' in flash                    # retrain, says the page
    # the same words for another intent would break training: refused
    meteo = by_text["la météo de demain à paris"]
    r = c.post("/review", {"csrf": token, "item": f"{meteo['call_id']}|{meteo['seq']}",
                           "action": "out_of_scope"})
    hs = (site.kb_root / "phrasings" / "hors_sujet.txt").read_text()
    assert hs.endswith("# console " + day + " by alice, call c-lost\n"
                       "la météo de demain à paris\n")
    r = c.post("/review", {"csrf": token, "item": f"{paume['call_id']}|{paume['seq']}",
                           "action": "assign", "intent": "obtenir_siren"})
    assert "already a phrasing of retrouver_siren_siret" in c.get("/review").text
    # dismiss: gone from the queue, nothing written
    before = _fingerprint(site.kb_root)
    others = [q for q in site.store.review_candidates(1.0) if q["text"] not in (LOST,)]
    keys = [f"{q['call_id']}|{q['seq']}" for q in others]
    if keys:
        c.post("/review", {"csrf": token, "item": keys, "action": "dismiss"})
    assert _fingerprint(site.kb_root) == before
    left = [q["text"] for q in site.store.review_candidates(site.config.console.review_below)]
    assert left == [LOST]
    errors = [i for i in check_kb(load_kb(site.kb_root)) if i.level == "error"]
    assert errors == []


# --- in a real browser -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _login(page, base: str, name: str) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/")


def test_browser_supervisor_journey(site, browser):
    """Log in, filter calls, open one, assign an utterance, see it in the KB."""
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
    _login(page, site.base, "alice")
    expect(page.locator("#kpi-calls")).to_have_text("7")
    expect(page.locator("svg.chart").first).to_be_visible()

    page.get_by_role("link", name="Calls").click()
    page.get_by_label("Outcome").select_option("transferred")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#calls-total")).to_have_text(re.compile(r"^3 call\(s\)"))
    rows = page.locator("table.calls tbody tr")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i).locator(".tag")).to_have_text("transferred")
    page.locator("table.calls tbody tr", has_text="not_understood").get_by_role(
        "link", name="Open").click()
    expect(page.locator("h1")).to_have_text("Call c-lost")
    expect(page.locator("#call-outcome")).to_have_text("transferred")
    expect(page.locator("table.turns")).to_contain_text(LOST)
    expect(page.locator("audio")).to_have_count(1)

    page.get_by_role("link", name="Review queue").click()
    item = page.locator(".utterances li", has_text=LOST)
    item.get_by_label("Intent").select_option("changement_adresse")
    item.get_by_role("button", name="Assign").click()
    expect(page.locator(".flash.ok").first).to_contain_text("added to changement_adresse")
    expect(page.locator(".utterances li", has_text=LOST)).to_have_count(0)

    page.get_by_role("link", name="Knowledge base").click()
    page.get_by_role("link", name="changement_adresse", exact=True).click()
    added = page.locator("li.from-console", has_text=phrasing_text(LOST))
    expect(added).to_contain_text(f"console {time.strftime('%Y-%m-%d')} by alice, call c-lost")
    page.screenshot(path=str(site.kb_root.parent / "kb.png"))
    assert not problems, problems
    ctx.close()


def test_browser_read_only_user(site, browser):
    from playwright.sync_api import expect

    ctx = browser.new_context()
    page = ctx.new_page()
    _login(page, site.base, "bob")
    page.goto(site.base + "/call?id=c-resolved")
    expect(page.locator("#caller-number")).to_have_text("•" * 9 + "70")
    page.goto(site.base + "/review")
    expect(page.get_by_role("button", name="Assign")).to_have_count(0)
    expect(page.get_by_role("button", name="Retrain")).to_have_count(0)
    ctx.close()


def test_browser_retrain_replaces_the_model(site, browser):
    from playwright.sync_api import expect

    inode_before = site.model.stat().st_ino
    before = IntentClassifier.load(site.model).report["cv_accuracy"]
    ctx = browser.new_context()
    page = ctx.new_page()
    _login(page, site.base, "alice")
    page.goto(site.base + "/review")
    page.get_by_role("button", name="Retrain").click()
    page.wait_for_url(site.base + "/retrain")
    expect(page.locator("#retrain-state")).to_have_class("state-running")
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(1)   # follows progress
    deadline = time.time() + 300
    while True:
        status = page.request.get(site.base + "/api/retrain").json()
        assert status["state"] != "failed", status["error"]
        if status["state"] == "done":
            break
        assert time.time() < deadline, "retraining took more than 5 minutes"
        time.sleep(1)
    page.goto(site.base + "/retrain")
    expect(page.locator("#retrain-state")).to_have_class("state-done")
    expect(page.locator("#acc-before")).to_have_text(f"{100 * before:.1f} %")
    after = page.locator("#acc-after").inner_text()
    assert re.fullmatch(r"\d+\.\d %", after)
    ctx.close()
    new = IntentClassifier.load(site.model)
    assert site.model.stat().st_ino != inode_before          # replaced, not rewritten
    assert new.kb_digest == kb_digest(load_kb(site.kb_root))  # trained on the edited KB
    assert f"{100 * new.report['cv_accuracy']:.1f} %" == after
    c = Client(site.base)
    c.login("alice")
    assert 'id="kb-changed"' not in c.get("/review").text


def test_the_real_kb_and_model_were_not_touched(site, config):
    assert _fingerprint(config.paths.kb) == site.real_kb
    real_model = config.paths.models / config.nlu.model
    assert hashlib.sha256(real_model.read_bytes()).hexdigest() == site.real_model


def test_console_command_serves_and_refuses_without_users(site, tmp_path):
    import subprocess
    import sys

    env_cmd = [sys.executable, "-m", "callbot"]
    r = subprocess.run(env_cmd + ["console"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 2 and "no console user" in r.stderr
    port = free_port()
    user = site.config.console.users[0]
    cfg = tmp_path / "console.toml"
    cfg.write_text(f'[paths]\ndata = "{site.config.paths.data}"\nkb = "{site.kb_root}"\n'
                   f'[console]\nport = {port}\n[[console.users]]\nname = "{user.name}"\n'
                   f'role = "{user.role}"\npassword_hash = "{user.password_hash}"\n')
    proc = subprocess.Popen(env_cmd + ["--config", str(cfg), "console"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert f"http://127.0.0.1:{port}/" in proc.stdout.readline()
        deadline = time.time() + 20
        while True:
            try:
                r = Client(f"http://127.0.0.1:{port}").login("alice")
                break
            except OSError:
                assert time.time() < deadline, proc.stderr.read()
                time.sleep(0.1)
        assert r.status == 303
    finally:
        proc.terminate()
        proc.wait(10)
