"""The console in a real browser: Playwright driving Debian's headless Chromium against a real `pymk serve`.

Loads /console, searches a user, sees its recommendations and the drawn ego network, opens an explanation,
dismisses a candidate and sees it gone; bad input and a service whose Redis died are told in words. Screenshots
go to the test's folder (and, with PYMK_CONSOLE_SCREENSHOTS=DIR, to DIR: docs/console.png comes from there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pymk.console.api import STATIC
from pymk.pipeline.model import Model
from tests.helpers import build_learned_model
from tests.redis_server import RedisServer
from tests.serving.processes import PYMK, ServeProcess, call

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium not installed (Debian: apt-get install chromium; scripts/browser.sh)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    assert (STATIC / "vendor" / "cytoscape.min.js").exists(), "run scripts/build_console.sh (scripts/setup.sh does)"
    return build_learned_model(tmp_path_factory.mktemp("browser") / "m", users=300, id_offset=1000)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    out = os.environ.get("PYMK_CONSOLE_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(out) / f"{name}.png")


def _copy(built, tmp_path) -> Path:
    out = tmp_path / "m"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns("stream"))
    return out


def test_search_explain_and_dismiss_in_the_browser(built, browser, tmp_path):
    model = _copy(built, tmp_path)
    g = Model.load(model).graph
    names = tmp_path / "names.csv"  # the operator's display names: every other user has one
    first = ["Ada", "Bo", "Chen", "Dara", "Emeka", "Freya", "Goran", "Hana", "Ines", "Jun", "Kofi"]
    last = ["Ng", "Ortiz", "Park", "Quist", "Rossi", "Sato", "Tan"]
    names.write_text("id,name\n" + "".join(f"{u},{first[u % 11]} {last[u % 7]}\n" for u in g.ids[::2].tolist()))
    svc = ServeProcess(["--model", str(model)], tmp_path / "serve.log", env={"PYMK_USER_NAMES": str(names)})
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        user = int(g.ids[int(g.degree.argmax())])  # a well-connected user: a full ego network
        ego = call("GET", f"{svc.base}/v1/console/users/{user}/ego?k=10")[1]
        page.goto(f"{svc.base}/console")
        page.fill("#user", str(user))
        page.click("#search button")
        page.wait_for_selector("#recs tbody tr")
        rows = page.locator("#recs tbody tr")
        assert rows.count() == len(ego["recommendations"]) > 0
        assert [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.user)")] == \
            [r["user_id"] for r in ego["recommendations"]]
        named = {int(k): v for k, v in ego["names"].items()}
        assert named and set(named) <= set(g.ids[::2].tolist())
        cells = rows.evaluate_all("rs => rs.map(r => r.cells[1].textContent)")
        assert cells == [f"{named[r['user_id']]} ({r['user_id']})" if r["user_id"] in named else str(r["user_id"])
                         for r in ego["recommendations"]]  # "name (id)" where a name is known, else the id
        nodes = page.evaluate("() => window.pymk.cy.nodes().length")
        assert nodes == 1 + len(ego["friends_drawn"]) + len(ego["recommendations"])
        assert page.evaluate("() => window.pymk.cy.edges().length") == len(ego["edges"])
        page.wait_for_function("() => window.pymk.charts.latency && window.pymk.charts.latency.data.labels.length >= 2")
        assert page.locator("#no-eval").is_visible()  # no evaluation recorded: said in words
        assert f"serving {Model.load(model).ranker_kind}" in page.inner_text("#stages")  # what answers, not a guess
        _shot(page, tmp_path, "console")

        first = ego["recommendations"][0]["user_id"]
        page.click(f'#recs tr[data-user="{first}"] button.why')
        page.wait_for_function("() => window.pymk.why !== null")
        facts = page.inner_text("#why-facts")
        assert "Stage-1 sources" in facts and "Mutual friends" in facts
        assert page.evaluate("() => window.pymk.why.data.labels.length") > 0  # the contributions' bar chart
        _shot(page, tmp_path, "console-why")

        page.click(f'#recs tr[data-user="{first}"] button.dismiss')
        page.wait_for_selector(f'#recs tr[data-user="{first}"]', state="detached")
        assert "Dismissed" in page.inner_text("#message")
        recs = call("GET", f"{svc.base}/v1/users/{user}/recommendations?k=50")[1]["recommendations"]
        assert first not in [r["user_id"] for r in recs]  # through the same API: gone for good

        page.fill("#user", "999999999")
        page.click("#search button")
        page.wait_for_function("() => document.querySelector('#message').textContent.includes('not in the model')")
        assert not page.locator("#recs").is_visible()
        page.fill("#user", "abc")
        page.click("#search button")
        page.wait_for_function("() => document.querySelector('#message').textContent.includes('not a user id')")
        assert errors == [], errors
    finally:
        page.close()
        svc.stop()


def test_the_page_says_when_redis_is_down_and_when_a_key_is_needed(built, browser, tmp_path):
    model = _copy(built, tmp_path)
    server = RedisServer(tmp_path)
    res = subprocess.run([PYMK, "publish", "--model", str(model), "--redis", server.url], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    svc = ServeProcess(["--model", str(model), "--redis", server.url], tmp_path / "serve.log")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        user = int(Model.load(model).graph.ids[3])
        server.stop(kill=True)
        page.goto(f"{svc.base}/console?user={user}&k=5")
        page.wait_for_selector("#recs tbody tr")
        assert "degraded" in page.inner_text("#summary")
        assert "Served degraded" in page.inner_text("#message")
        page.wait_for_function("() => document.querySelector('#redis').textContent === 'redis: down'")
        _shot(page, tmp_path, "console-degraded")
    finally:
        page.close()
        svc.stop()
        server.stop() if server.proc.poll() is None else None
    from typer.testing import CliRunner

    from pymk.cli import app

    res = CliRunner().invoke(app, ["keys", "create", "--model", str(model), "--scopes", "admin"])
    assert res.exit_code == 0, res.output
    key = res.stdout.strip().splitlines()[-1]
    svc = ServeProcess(["--model", str(model)], tmp_path / "serve2.log")
    page = browser.new_page()
    try:
        page.goto(f"{svc.base}/console?user={user}")
        page.wait_for_function("() => document.querySelector('#message').textContent.includes('API key')")
        page.fill("#key", key)
        page.dispatch_event("#key", "change")
        page.click("#search button")
        page.wait_for_selector("#recs tbody tr")
    finally:
        page.close()
        svc.stop()
