"""The dashboard and /docs pages in a real headless Chromium, against a real server (the
figures behind them are tested in tests/unit/test_dashboard.py).

The browser is Debian's chromium driven by Playwright for Python (never `playwright install`:
there is no internet to download a browser build). Screenshots go to tests/.artifacts/.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests

from serverproc import ADMIN, ROOT, SCORER

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--disable-gpu", "--headless"]
ARTIFACTS = ROOT / "tests" / ".artifacts"


# -- the pages in a browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the [test] extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    yield page
    context.close()


def _sign_in(page, who):
    page.fill("#username", who[0])
    page.fill("#password", who[1])
    page.click("#signin button[type=submit]")


def _traffic(server, seconds: float) -> threading.Thread:
    def run():
        s = requests.Session()
        s.auth = SCORER
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s.post(server.url + "/models/cars/predict", json={"data": [{"wt": 2.6, "hp": 110, "cyl": "6"}]})
            s.post(server.url + "/models/iris/predict", json={"data": [{"Sepal.Length": 5.1}]})   # 422
            time.sleep(0.02)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.r
def test_pages_are_open_and_their_data_is_not(server):
    for path in ("/dashboard", "/docs", "/static/swagger/swagger-ui-bundle.js", "/static/dashboard.js"):
        r = requests.get(server.url + path, timeout=10)
        assert r.status_code == 200, path
    csp = requests.get(server.url + "/dashboard", timeout=10).headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "http" not in csp
    assert requests.get(server.url + "/healthz", timeout=10).headers["Content-Security-Policy"].startswith(
        "default-src 'none'")
    assert requests.get(server.url + "/dashboard/data", timeout=10).status_code == 401
    assert server.get("/dashboard/data", auth=SCORER).status_code == 403
    assert requests.get(server.url + "/static/../app.py", timeout=10).status_code == 404


@pytest.mark.r
@pytest.mark.slow
def test_dashboard_in_chromium(server, page):
    traffic = _traffic(server, 6)
    page.goto(server.url + "/dashboard")
    _sign_in(page, SCORER)                                    # a scorer is told it needs an admin
    page.wait_for_selector("#signin-error:has-text('admin')")
    page.problems.clear()                                     # the console logged that 403
    _sign_in(page, ADMIN)
    page.wait_for_selector("#workers tbody tr[data-slot='1']")
    assert page.locator("#workers tbody tr").count() == 2
    assert page.locator("#workers tbody tr .badge").first.inner_text() in ("idle", "busy")
    for name in ("cars", "iris", "chaos"):
        assert page.locator(f"#models tbody tr[data-model='{name}']").inner_text().count("loaded") == 1
    traffic.join()
    page.wait_for_selector("#requests tbody tr[data-model='iris']")
    page.wait_for_timeout(4500)                               # two more refreshes: lines on the charts
    cars = page.locator("#requests tbody tr[data-model='cars'] td").all_inner_texts()
    assert int(cars[6]) > 0 and cars[3] != "–"               # total, p50
    assert int(page.locator("#requests tbody tr[data-model='iris'] td").all_inner_texts()[7]) > 0   # 4xx
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert not page.problems, page.problems


@pytest.mark.r
@pytest.mark.slow
def test_docs_in_chromium(server, page):
    page.goto(server.url + "/docs")
    assert page.locator(".opblock").count() == 0              # nothing before signing in
    _sign_in(page, SCORER)
    page.wait_for_selector("#operations-predict-predict_cars")
    assert page.locator(".opblock").count() >= 10
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs.png"), full_page=True)
    page.click("#operations-predict-predict_cars .opblock-summary")
    page.click("#operations-predict-predict_cars button.execute")   # Try it out is on: run the example
    status = page.wait_for_selector("#operations-predict-predict_cars .live-responses-table tbody "
                                    "td.response-col_status")
    assert status.inner_text().strip().startswith("200")
    status.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "docs-try-it-out.png"))
    assert not page.problems, page.problems
