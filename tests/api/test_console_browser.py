"""The web console (node/api/console/), served by the daemon, driven by a real browser.

The HTTP checks (headers, redirects, the fixed file list) run against the in-process
daemon. The browser test starts a real `gd-node run`, makes tokens with
`gd-node tokens create`, and drives Debian's headless Chromium through chromedriver:
sign in → pending gene → approve → the gene is native (checked through the API too);
a viewer sees the approve button disabled, and an approve it forces anyway is 403.
Without chromium, chromium-driver and selenium the browser test skips, naming the
command that installs them (README: "The web console").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gd_node_procs import GD_NODE, gd_node, reap
from rich.console import Console

from gd.motors.domains import demo_genes, get_domain
from gd.node.api.views_console import CONTENT_SECURITY_POLICY
from gd.testnet.dashboard import console_line, render
from gd.testnet.observe import NodeView
from gd.testnet.plan import make_plan

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
# Generous: the suite shares two cores with other work, and Chromium is heavy.
BROWSER_WAIT_S = 60.0
DAEMON_READY_S = 90.0
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")


# -- the console over plain HTTP (in-process daemon) ---------------------------------------
async def test_console_is_served_with_a_strict_csp(api_node):
    async with api_node.client() as http:  # no credential: the page holds no data
        page = await http.get("/console/")
        script = await http.get("/console/app.js")
        style = await http.get("/console/app.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/console/app.js"' in page.text
    assert "<script>" not in page.text  # no inline script: CSP script-src 'self' allows none
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "sessionStorage" in script.text and "Bearer" in script.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    for reply in (page, script, style):
        csp = reply.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert reply.headers["x-frame-options"] == "DENY"
        assert "set-cookie" not in reply.headers


async def test_root_leads_to_the_console_and_only_shipped_files_are_served(api_node):
    async with api_node.client() as http:
        for path in ("/", "/console"):
            reply = await http.get(path)
            assert reply.status_code == 307 and reply.headers["location"] == "/console/"
        for path in ("/console/config.toml", "/console/..%2Fconfig.toml",
                     "/console/views_console.py"):
            reply = await http.get(path)
            assert reply.status_code == 404, path
            assert reply.headers["content-type"] == "application/problem+json"
        # The API behind it still wants a credential.
        assert (await http.get("/v1/pending")).status_code == 401
        spec = (await http.get("/v1/openapi.json")).json()
    assert not [p for p in spec["paths"] if p.startswith("/console") or p == "/"]


def test_testnet_dashboard_prints_each_running_nodes_console_url(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, orgs=3, regions=1, seed=5)
    views = [NodeView(n.name, n.org, n.region, n.peer_id, running=True, pid=100 + i,
                      extra={"api_url": f"http://127.0.0.1:{4100 + i}"})
             for i, n in enumerate(plan.nodes)]
    views[2].running = False  # down: its old URL answers nothing, so it is not shown
    console = Console(width=200, record=True, color_system=None)
    console.print(render(plan, views, 0.0, width=200))
    panel = console.export_text()
    assert "node-1 http://127.0.0.1:4100/console/" in panel
    assert "node-2 http://127.0.0.1:4101/console/" in panel
    assert "4102" not in panel
    assert console_line([]).endswith("none running (no API)")


# -- the console in a real browser (a real `gd-node run`) ----------------------------------
def _browser_missing() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} not installed: run `{INSTALL}` (or make test as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


def _api_url(home: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + DAEMON_READY_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gd-node run exited before it was ready"
        out = subprocess.run([GD_NODE, "status", "--json", "--home", str(home)],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            url = json.loads(out.stdout).get("daemon", {}).get("api_url")
            if url:
                return str(url)
        time.sleep(0.3)
    raise AssertionError(f"no API URL from gd-node status within {DAEMON_READY_S} s")


@contextlib.contextmanager
def _chromium(profile: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # The system chromedriver, named: selenium must not look for (or download) another.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(BROWSER_WAIT_S)
        yield driver
    finally:
        driver.quit()


def _pending_genes(home: Path, tmp: Path) -> dict[str, str]:
    """Two turbofan genes imported as adaptation_pending: name -> id."""
    base = demo_genes("turbofan")[0]
    rows = [{**base, "name": "console-approve-me"},
            {**base, "name": "console-viewer-sees", "codons": [
                {"feature": "s11", "op": ">", "threshold": 47.9}]}]
    path = tmp / "pending.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gd_node("genes", "import", str(path), "--pending", home=home)
    listed = json.loads(gd_node("genes", "list", "--domain", "turbofan", "--json", home=home))
    return {g["name"]: g["id"] for g in listed if g["name"].startswith("console-")}


def _sign_in(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, BROWSER_WAIT_S)
    driver.get(f"{url}/console/")
    wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(token)
    driver.find_element(By.ID, "login-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "nav")))
    wait.until(ec.presence_of_element_located((By.ID, "overview-stats")))


def _text(driver: Any, css: str) -> str:
    """The text of the first element matching `css` now ("" when there is none), read in
    the page: views re-render, so a handle held across a wait may have gone stale."""
    return str(driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        css))


def _click(driver: Any, css: str) -> None:
    """Click the element matching `css`, finding it again if a re-render replaced it
    between finding and clicking (bounded by BROWSER_WAIT_S)."""
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d: Any) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    WebDriverWait(driver, BROWSER_WAIT_S, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException,
        ElementClickInterceptedException)).until(attempt)


def _open_pending(driver: Any, gene_id: str) -> str:
    """Pending → the gene's row → its comparison; returns the approve button's selector."""
    from selenium.webdriver.support.ui import WebDriverWait

    _click(driver, 'nav a[data-view="pending"]')
    _click(driver, f'#pending-list tr[data-gene="{gene_id}"]')
    button = f'.candidate[data-gene="{gene_id}"] button.approve'
    WebDriverWait(driver, BROWSER_WAIT_S).until(lambda d: d.execute_script(
        "return document.querySelector(arguments[0]) !== null", button))
    return button


def _enabled(driver: Any, css: str) -> bool:
    return bool(driver.execute_script("return !document.querySelector(arguments[0]).disabled",
                                      css))


@pytest.mark.slow
def test_console_in_chromium_approver_approves_viewer_cannot():
    why = _browser_missing()
    if why is not None:
        pytest.skip(why)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp(prefix="gdconsole", dir="/tmp"))
    shots = Path(os.environ.get("TMPDIR", tempfile.gettempdir()))
    home = tmp / "node"
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([GD_NODE, "demo", "--dir", str(home), "--org", "acme", "--region",
                        "eu"], check=True, capture_output=True, timeout=120)
        with (home / "config.toml").open("a") as cfg:
            cfg.write('\n[api]\nrate_per_s = 1000.0\nrate_burst = 1000\n')
        genes = _pending_genes(home, tmp)
        approve_id, viewer_id = genes["console-approve-me"], genes["console-viewer-sees"]
        tokens = {role: json.loads(gd_node("tokens", "create", "--role", role, "--domain",
                                        "turbofan", "--json", home=home))["token"]
                  for role in ("approver", "viewer")}
        proc = subprocess.Popen([GD_NODE, "run", "--home", str(home), "--log-format", "json"],
                                stdout=subprocess.DEVNULL,
                                stderr=(tmp / "daemon.log").open("ab"))
        url = _api_url(home, proc)
        approver = httpx.Client(base_url=url, timeout=60,
                                headers={"Authorization": f"Bearer {tokens['approver']}"})
        viewer = httpx.Client(base_url=url, timeout=60,
                              headers={"Authorization": f"Bearer {tokens['viewer']}"})
        # The motors' view of the gene (on states where it applies, so every motor runs),
        # so the console has scores to chart.
        states = [{"values": dict(s.values), "entity": s.entity, "t": s.t}
                  for s in get_domain("turbofan").demo_states(300, 5)
                  if s.values["s11"] > 47.9][:2]
        assert states, "the demo states include hot engines"
        evaluated = approver.post(f"/v1/genes/{approve_id}/evaluate",
                                  json={"states": states, "seed": 3, "allow_pending": True})
        assert evaluated.status_code == 200, evaluated.text

        with _chromium(tmp / "profile-approver") as driver:
            wait = WebDriverWait(driver, BROWSER_WAIT_S)
            driver.get(f"{url}/console/")
            token_box = wait.until(lambda d: d.find_element(By.ID, "token"))
            token_box.send_keys("gdn_not_a_token")
            driver.find_element(By.ID, "login-button").click()
            wait.until(lambda d: d.find_element(By.ID, "login-error").text)
            assert "refused" in driver.find_element(By.ID, "login-error").text
            token_box.clear()

            _sign_in(driver, url, tokens["approver"])
            assert "approver" in driver.find_element(By.ID, "who").text
            assert driver.execute_script(
                "return sessionStorage.getItem('gd.console.token')") == tokens["approver"]
            assert driver.get_cookies() == []  # the credential is never a cookie
            button = _open_pending(driver, approve_id)
            card = driver.execute_script(
                "const c = document.querySelector(`.candidate[data-gene='${arguments[0]}']`);"
                "return {bars: c.querySelectorAll('svg.chart rect.bar').length, text: c.innerText,"
                " explained: [...c.querySelectorAll('.explain')].map(e => e.textContent)};",
                approve_id)
            # Each motor's score in the chart, and its explanation in words.
            assert card["bars"] == 5, "the chart shows the four motors' scores and CP"
            assert "M_P" in card["text"] and "M_M" in card["text"]
            assert len(card["explained"]) == 4 and all(card["explained"]), \
                "each motor explains its score"
            assert _enabled(driver, button)
            driver.save_screenshot(str(shots / "gd-console-pending.png"))
            _click(driver, button)
            wait.until(lambda d: "native" in _text(d, "#gene-status"))
            assert "Approved" in _text(driver, "#flash")
            driver.save_screenshot(str(shots / "gd-console-approved.png"))
            # Every other view loads from the API without an error.
            for view, title in (("overview", "Node acme"), ("decisions", "Decisions"),
                                ("agreements", "Agreements"), ("audit", "Audit log"),
                                ("ledger", "Ledger"), ("jobs", "Jobs")):
                _click(driver, f'nav a[data-view="{view}"]')
                wait.until(lambda d, t=title: _text(d, "main h1").startswith(t))
                assert "Could not load" not in _text(driver, "#main"), view
                driver.save_screenshot(str(shots / f"gd-console-{view}.png"))
            # The jobs view lists a job it was not there for, over the event stream.
            job = approver.post("/v1/jobs", json={"kind": "evaluate", "gene_id": approve_id,
                                                  "states": states, "seed": 4})
            assert job.status_code == 202, job.text
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs progress"))
            # Ledger: the inclusion proof of the approval's entry.
            _click(driver, 'nav a[data-view="ledger"]')
            wait.until(lambda d: _text(d, "main h1") == "Ledger")
            _click(driver, "#proof-button")
            wait.until(lambda d: "root" in _text(d, "#proof-result"))
        shown = approver.get(f"/v1/genes/{approve_id}").json()
        assert shown["status"] == "native"

        with _chromium(tmp / "profile-viewer") as driver:
            _sign_in(driver, url, tokens["viewer"])
            button = _open_pending(driver, viewer_id)
            assert not _enabled(driver, button), "a viewer's approve button must not work"
            note = _text(driver, ".role-note")
            assert "approver role" in note
            # Forced anyway (the console's own request, with the viewer's token): 403.
            status = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(`/v1/pending/${arguments[0]}/approve`, {method: 'POST', headers: {"
                "Authorization: `Bearer ${sessionStorage.getItem('gd.console.token')}`,"
                "'Content-Type': 'application/json'}, body: '{}'}).then(r => done(r.status));",
                viewer_id)
            assert status == 403
            driver.save_screenshot(str(shots / "gd-console-viewer.png"))
        forced = viewer.post(f"/v1/pending/{viewer_id}/approve", json={})
        assert forced.status_code == 403
        assert approver.get(f"/v1/genes/{viewer_id}").json()["status"] == "adaptation_pending"
        approver.close()
        viewer.close()
    finally:
        if proc is not None:
            reap(proc)
        shutil.rmtree(tmp, ignore_errors=True)


OIDC_CONFIG = """
[api]
rate_per_s = 1000.0
rate_burst = 1000

[api.oidc]
issuer = "{issuer}"
audience = "{audience}"
client_id = "{client_id}"
roles_claim = "roles"

[api.oidc.roles]
"gd-approvers" = {{ role = "approver", domains = ["turbofan"] }}
"""


@pytest.mark.slow
def test_console_oidc_login_in_chromium():
    """Login with OIDC: console → the issuer (a loopback provider whose test user, an
    approver by its roles claim, consents at once) → back with code and state → the
    pending gene → approve → native. First, an answer whose state is not this tab's is
    refused in the page and never exchanged."""
    why = _browser_missing()
    if why is not None:
        pytest.skip(why)
    from oidc_issuer import AUDIENCE, CLIENT_ID, running_issuer
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp(prefix="gdconsole-oidc", dir="/tmp"))
    home = tmp / "node"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with running_issuer() as issuer:
            issuer.user = {"sub": "carol", "roles": ["gd-approvers"]}
            subprocess.run([GD_NODE, "demo", "--dir", str(home), "--org", "acme", "--region",
                            "eu"], check=True, capture_output=True, timeout=120)
            with (home / "config.toml").open("a") as cfg:
                cfg.write(OIDC_CONFIG.format(issuer=issuer.url, audience=AUDIENCE,
                                             client_id=CLIENT_ID))
            gene_id = _pending_genes(home, tmp)["console-approve-me"]
            proc = subprocess.Popen([GD_NODE, "run", "--home", str(home), "--log-format",
                                     "json"], stdout=subprocess.DEVNULL,
                                    stderr=(tmp / "daemon.log").open("ab"))
            url = _api_url(home, proc)
            with _chromium(tmp / "profile-oidc") as driver:
                wait = WebDriverWait(driver, BROWSER_WAIT_S)
                driver.get(f"{url}/console/")
                wait.until(ec.visibility_of_element_located((By.ID, "oidc-login")))
                assert issuer.url in _text(driver, "#oidc-issuer")
                # An answer that is not for the sign-in this tab started: refused here.
                driver.execute_script(
                    "sessionStorage.setItem('gd.console.oidc', JSON.stringify({state: "
                    "'the-state-this-tab-sent', verifier: 'v'.repeat(64), nonce: "
                    "'n'.repeat(16), redirect: location.origin + '/console/callback'}))")
                driver.get(f"{url}/console/callback?code=forged&state=someone-elses")
                wait.until(lambda d: "state mismatch" in _text(d, "#login-error"))
                assert "/token" not in issuer.hits, "a mismatched answer is never exchanged"
                assert "code=" not in driver.current_url
                assert driver.execute_script(
                    "return sessionStorage.getItem('gd.console.oidc')") is None
                # The real flow, from the button.
                _click(driver, "#oidc-login")
                wait.until(ec.visibility_of_element_located((By.ID, "nav")))
                wait.until(ec.presence_of_element_located((By.ID, "overview-stats")))
                assert issuer.hits["/authorize"] == 1 and issuer.hits["/token"] == 1
                assert "oidc:carol" in _text(driver, "#who")
                assert "approver" in _text(driver, "#who")
                assert "code=" not in driver.current_url and "state=" not in driver.current_url
                assert driver.get_cookies() == []  # the credential is never a cookie
                bearer = driver.execute_script(
                    "return sessionStorage.getItem('gd.console.token')")
                button = _open_pending(driver, gene_id)
                assert _enabled(driver, button)
                _click(driver, button)
                wait.until(lambda d: "native" in _text(d, "#gene-status"))
                assert "Approved" in _text(driver, "#flash")
            with httpx.Client(base_url=url, timeout=60,
                              headers={"Authorization": f"Bearer {bearer}"}) as http:
                assert http.get(f"/v1/genes/{gene_id}").json()["status"] == "native"
                assert http.get("/v1/status").json()["api"]["caller"]["actor"] == "oidc:carol"
    finally:
        if proc is not None:
            reap(proc)
        shutil.rmtree(tmp, ignore_errors=True)
