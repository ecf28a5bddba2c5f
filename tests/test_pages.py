"""The search page and the dashboard in real Chromium (Debian's /usr/bin/chromium, driven by
Playwright) against a live server: searches, facets, a photo, feedback that lands in SQL, the
dashboard's charts after a refresh, and with keys on, no key in any page or request.

FUSIONRANK_SCREENSHOTS=DIR saves the README's screenshots there (docs/screenshots)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import QUICK_LEARNING, cloned_store, live_server, start_test_runtime
from pydantic import SecretStr
from sqlalchemy import select

from service.learning import encoders_of, memory_fold
from shoppers.simulator import Simulator
from storage.models import FeedbackEvent, Impression

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("FUSIONRANK_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).parent / "browser" / "node_modules" / "axe-core" / "axe.min.js"
ADMIN_KEY = "admin-key-for-the-page-tests-0001"
INGEST_KEY = "ingest-key-for-the-page-tests-001"
SEARCH_KEY = "search-key-for-the-page-tests-001"
KEYS = f"{ADMIN_KEY}:admin,{INGEST_KEY}:ingest,{SEARCH_KEY}:search"
# What a file dragged onto the drop zone dispatches.
DROP = """(b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const files = new DataTransfer();
    files.items.add(new File([bytes], "photo.jpg", {type: "image/jpeg"}));
    const drop = new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true});
    document.getElementById("drop").dispatchEvent(drop);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra")
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (or FUSIONRANK_CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory, ingested, embedder):
    """A live server whose shoppers searched and clicked, with a refresh run and the logs
    folded into the query memory and the analytics."""
    directory = tmp_path_factory.mktemp("pages")
    with cloned_store(ingested, "sqlite", directory, **QUICK_LEARNING) as store:
        rt = start_test_runtime(store.settings, embedder)
        rt.learner.runs_here = True
        try:
            with live_server(store.settings, runtime=rt) as srv:
                report = Simulator(srv.url, ingested.csv, k=10).run(
                    150, seed=5, concurrency=2, progress=False
                )
                assert report.failed == 0 and report.events > 50
                with httpx.Client(base_url=srv.url, timeout=60) as c:
                    run_id = c.post("/v1/models/train").json()["run_id"]
                    deadline = time.monotonic() + 180
                    while (run := c.get(f"/v1/models/runs/{run_id}").json())["status"] in (
                        "queued",
                        "running",
                    ):
                        assert time.monotonic() < deadline
                        time.sleep(0.5)
                    # serve the trained candidate, promoted or not: the dashboard shows what it
                    # learned
                    assert run["candidate"], run
                    r = c.post(f"/v1/models/{run['candidate']}/activate")
                    assert r.status_code == 200, r.text
                srv.fold = memory_fold(store.settings, rt.sessions, encoders_of(rt.searcher.index))
                rt.impressions.flush()
                srv.fold.run()
                yield srv
        finally:
            rt.close()


def _shots() -> Path | None:
    where = os.environ.get("FUSIONRANK_SCREENSHOTS")
    return Path(where) if where else None


def _shot(page, name: str) -> None:
    if (where := _shots()) is not None:
        where.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(where / name), full_page=False)


def _events(rt, search_id: str) -> list[str]:
    with rt.sessions() as s:
        return sorted(
            s.scalars(select(FeedbackEvent.type).where(FeedbackEvent.search_id == search_id))
        )


def _searched(page, action) -> dict:
    """What the page's next search answered, the search being started by `action()`."""
    with page.expect_response(lambda r: r.url.endswith("/v1/search")) as answer:
        action()
    assert answer.value.ok, answer.value.text()
    page.wait_for_load_state("networkidle")
    return answer.value.json()


def test_search_facets_photo_product_and_feedback(shop, browser, ingested):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(shop.url + "/")
    box = page.get_by_role("combobox")
    box.fill("watc")
    page.get_by_role("option").first.wait_for()  # suggestions of logged queries that found things
    assert "watch" in page.get_by_role("option").first.inner_text().lower()
    box.fill("wrist watch")
    body = _searched(page, lambda: page.get_by_role("button", name="Search", exact=True).click())
    assert page.locator("article.card").count() == len(body["results"]) > 0

    # The facet counts on the page are the API's, over every candidate, not the page of 24.
    with httpx.Client(base_url=shop.url, timeout=60) as c:
        api = c.post(
            "/v1/search", json={"query": "wrist watch", "k": 24, "facets": ["articleType"]}
        ).json()["facets"]["articleType"]
    shown = page.locator('fieldset[data-attribute="articleType"] label')
    on_page = {
        shown.nth(i).locator("span").first.inner_text(): int(
            shown.nth(i).locator(".count").inner_text()
        )
        for i in range(shown.count())
    }
    assert on_page == {f["value"]: f["count"] for f in api[:12]}
    assert sum(on_page.values()) > len(body["results"])  # counted beyond the shown page

    # Picking a facet filters the results to it.
    watches = page.get_by_role("group", name="articleType").get_by_role("checkbox", name="Watches")
    filtered = _searched(page, watches.check)
    assert filtered["results"]
    assert all(h["attributes"]["articleType"] == "Watches" for h in filtered["results"])
    _shot(page, "search.png")
    _searched(page, watches.uncheck)

    # A photo from the catalog finds its own product at the top (exploration may swap a pair).
    photo = next(r for r in ingested.rows if r["articleType"] == "Handbags")
    box.fill("")
    by_photo = _searched(page, lambda: page.set_input_files("#photo", photo["image_path"]))
    assert photo["id"] in [h["product_id"] for h in by_photo["results"][:2]]
    assert "photo" in page.locator("#status").inner_text()

    # Opening a product sends a click; add to cart sends its event: both are in SQL.
    page.locator("article.card button.open").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Add to cart").click()
    page.get_by_text("Added to cart: recorded.").wait_for()
    _shot(page, "product.png")
    assert _events(shop.runtime, by_photo["search_id"]) == ["add_to_cart", "click"]
    page.close()


def test_the_dashboard_draws_every_chart_and_lists_a_query_without_results(shop, browser):
    with httpx.Client(base_url=shop.url, timeout=60) as c:
        nothing = {"articleType": "Watches", "baseColour": "No Such Colour"}
        r = c.post("/v1/search", json={"query": "platinum pocket watch", "filters": nothing})
        assert r.status_code == 200 and r.json()["results"] == []
    shop.runtime.impressions.flush()
    shop.fold.run()
    page = browser.new_page(viewport={"width": 1280, "height": 2200})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(shop.url + "/dashboard")
    page.wait_for_function("document.body.dataset.loaded === '1'")
    assert "failed" not in page.locator("#board-status").inner_text(), page.locator(
        "#board-status"
    ).inner_text()
    for chart in (
        "timeline",
        "chart-ctr",
        "chart-conversion",
        "chart-mrr",
        "chart-events",
        "chart-types",
        "chart-positions",
        "chart-bias",
        "chart-class-weights",
    ):
        points = page.locator(f"#{chart} figure").get_attribute("data-points")
        assert points is not None and int(points) > 0, f"{chart} has no data"
    assert page.locator("#versions tbody tr").count() >= 2  # the bootstrap and the candidate
    assert "platinum pocket watch" in page.locator("#no-results").inner_text()
    assert (
        page.locator("#versions").get_by_text("accepted").count()
        + page.locator("#versions").get_by_text("kept").count()
        > 0
    )  # the gate's decision per type
    page.locator("#top-queries button.linklike").first.click()
    page.locator("#rankings h4").first.wait_for()
    page.locator("#memory table").wait_for()
    _shot(page, "dashboard.png")
    assert not errors
    page.close()


def test_with_keys_no_page_or_request_holds_a_key(shop, browser, ingested):
    settings = shop.settings.model_copy(
        update={"api_keys": SecretStr(KEYS), "learner_in_process": False}
    )
    with live_server(settings, runtime=None) as srv:
        context = browser.new_context()
        page = context.new_page()
        sent: list[str] = []
        hosts: set[str] = set()

        def record(request) -> None:
            sent.append(request.url + str(request.headers) + (request.post_data or ""))
            hosts.add(urlsplit(request.url).netloc)

        page.on("request", record)
        _shop_with_words_and_a_photo(page, srv.url, ingested)

        cookie = next(c for c in context.cookies() if c["name"] == "fusionrank_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["value"].startswith("visitor-")
        _assert_a_visitor_may_only_search(srv, cookie["value"])

        page.goto(srv.url + "/dashboard")
        page.get_by_label("Admin key").fill(INGEST_KEY)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("the dashboard needs an admin key").wait_for()
        page.get_by_label("Admin key").fill(ADMIN_KEY)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_function("document.body.dataset.loaded === '1'")
        assert page.locator("#versions tbody tr").count() >= 1

        assert hosts == {urlsplit(srv.url).netloc}, f"the pages asked other hosts: {hosts}"
        sources = [page.content(), *_page_sources(srv.url)]
        signed_in = next(c for c in context.cookies() if c["name"] == "fusionrank_session")
        assert signed_in["value"].startswith("key-")  # the key's fingerprint, not the key
        for key in (ADMIN_KEY, INGEST_KEY, SEARCH_KEY):
            assert not any(key in s for s in sources), "a page holds a key"
            # only the sign-in's own requests carry what the admin typed
            assert all("/dashboard/session" in s for s in sent if key in s)
        context.close()


def _shop_with_words_and_a_photo(page, url: str, ingested) -> None:
    """Search, open a product and buy it; then drop a photo with words: a composed search."""
    page.goto(url + "/")
    page.get_by_role("combobox").fill("leather handbag")
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("article.card").first.wait_for()
    page.locator("article.card button.open").first.click()
    page.get_by_role("button", name="Buy now").click()
    page.get_by_text("Bought: recorded.").wait_for()
    page.get_by_role("button", name="Close").click()

    photo = next(r for r in ingested.rows if r["articleType"] == "Heels")
    page.get_by_role("combobox").fill("in red")
    with page.expect_request(lambda r: r.url.endswith("/v1/search")) as asked:
        page.evaluate(DROP, base64.b64encode(Path(photo["image_path"]).read_bytes()).decode())
    sent_body = json.loads(asked.value.post_data or "{}")
    assert sent_body["query"] == "in red" and sent_body["image"].startswith("data:image/jpeg")
    page.get_by_text("results for your photo and words").wait_for()


def _assert_a_visitor_may_only_search(srv, cookie: str) -> None:
    """The visitor's session may search and send feedback, and nothing else."""
    with httpx.Client(base_url=srv.url, cookies={"fusionrank_session": cookie}) as c:
        page_header = {"X-Fusionrank-Page": "1"}
        assert c.get("/v1/models", headers=page_header).status_code == 403
        assert c.get("/v1/analytics/queries", headers=page_header).status_code == 403
        # without the pages' header a cookie cannot change anything (another site's form)
        assert c.post("/v1/search", json={"query": "bag"}).status_code == 401
        # a visitor is one shopper, whatever user id it sends
        forged = {"query": "bag", "user_id": "someone-else"}
        r = c.post("/v1/search", json=forged, headers=page_header)
        assert r.status_code == 200, r.text
        srv.runtime.impressions.flush()
        with srv.runtime.sessions() as s:
            logged = s.get(Impression, r.json()["search_id"])
            assert logged.user_id is None and logged.caller == cookie.split(".")[0]


def _page_sources(url: str) -> list[str]:
    """The pages and scripts as the server sends them."""
    assets = (
        "/",
        "/dashboard",
        "/static/api.js",
        "/static/search.js",
        "/static/dashboard.js",
        "/static/charts.js",
    )
    with httpx.Client(base_url=url) as c:
        return [c.get(asset).text for asset in assets]


def _accessibility_problems(page) -> list[str]:
    """What axe-core finds against WCAG 2 A and AA (labels, names, contrast, landmarks...)."""
    if not AXE.exists():
        message = f"no axe-core at {AXE}: `npm ci --prefix tests/browser`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, {runOnly: ["wcag2a", "wcag2aa"]})).violations
            .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target).join(" ")}`)"""
    )
    return list(found)


def test_the_pages_are_accessible_and_work_from_the_keyboard(shop, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.goto(shop.url + "/")
    page.keyboard.type("leather handbag")  # the search box has the focus
    with page.expect_response(lambda r: r.url.endswith("/v1/search")):
        page.keyboard.press("Enter")
    page.locator("article.card").first.wait_for()
    page.wait_for_load_state("networkidle")
    assert _accessibility_problems(page) == []
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    page.locator("article.card button.open").first.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    page.goto(shop.url + "/dashboard")
    page.wait_for_function("document.body.dataset.loaded === '1'")
    assert _accessibility_problems(page) == []
    page.close()
