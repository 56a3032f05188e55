"""The page at /ui in a real browser: Debian's chromium, headless, driven by selenium through Debian's
chromedriver (no browser download), against a real stack — search-service and llm-service (the tiny
model) as processes, real Redis, the embedded engine — with API keys set, so the page has to ask for one.

Each scenario writes a screenshot under the test's temp folder (``<tmp>/screens/*.png``; the path is
printed). The tests run in file order: they share one browser and one stack.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import TINY_NAME
from stack_dev.procs import ServiceProcess

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "sample_corpus.jsonl"
COLLECTION = "ui"
USER, ADMIN = "ui-user-key-4411", "ui-admin-key-98ad"
WAIT_S = 30

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (NoAlertPresentException, StaleElementReferenceException,  # noqa: E402
                                        TimeoutException)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"{CHROMIUM} / {CHROMEDRIVER} not installed (Debian packages chromium, chromium-driver: "
           "`make test` installs them through scripts/ensure_tools.sh --browser)")


def _docs() -> list[dict]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    return [{"id": r["_id"], "title": r["title"], "text": r["text"], "metadata": r["metadata"]} for r in rows]


@pytest.fixture(scope="module")
def stack(tiny_model_dir, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-stack")
    llm = ServiceProcess("llm_service.main:create_app", log_path=tmp / "llm.log", ready_path="/readyz", env={
        "LLM_MODELS_DIR": str(tiny_model_dir), "LLM_DEFAULT_MODEL": TINY_NAME, "LLM_DEVICE": "cpu",
        "LLM_LOG_JSON": "false"}).start(timeout=120)
    search = ServiceProcess("search_service.main:create_app", log_path=tmp / "search.log", ready_path="/readyz", env={
        "SEARCH_DATA_DIR": str(tmp / "data"), "SEARCH_REDIS_URL": redis_url, "SEARCH_CACHE_PREFIX": "ui-" + tmp.name,
        "SEARCH_LLM_URL": llm.url, "SEARCH_LOG_JSON": "false", "SEARCH_API_KEYS": USER,
        "SEARCH_ADMIN_KEY": ADMIN}).start(timeout=180)
    with httpx.Client(base_url=search.url, timeout=60, headers={"Authorization": f"Bearer {USER}"}) as client:
        assert client.post("/collections", json={"name": COLLECTION}).status_code == 201
        r = client.post(f"/collections/{COLLECTION}/documents", json={"documents": _docs()})
        assert r.status_code == 200, r.text
        yield {"url": search.url, "client": client, "tmp": tmp}
    search.stop()
    llm.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screens(stack) -> Path:
    d = stack["tmp"] / "screens"
    d.mkdir(exist_ok=True)
    print(f"screenshots: {d}")
    return d


def shot(driver, screens: Path, name: str) -> None:
    path = screens / f"{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000


def wait(driver, cond, what: str, timeout: float = WAIT_S):
    try:
        # a re-render replaces elements between polls: a stale one means "not yet"
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: cond(d))
    except TimeoutException:
        msg = driver.execute_script("return document.getElementById('message').textContent")
        raise AssertionError(f"timed out waiting for {what}; the page's message: {msg!r}") from None


def enter_key(driver, key: str, title: str = "API key") -> None:
    dialog = wait(driver, lambda d: d.find_element(By.ID, "key-dialog").is_displayed()
                  and d.find_element(By.ID, "key-dialog"), "the key dialog")
    assert dialog.find_element(By.ID, "key-dialog-title").text == title
    box = driver.find_element(By.ID, "key-input")
    assert box.get_attribute("type") == "password"
    box.send_keys(key + Keys.ENTER)
    wait(driver, lambda d: not d.find_element(By.ID, "key-dialog").is_displayed(), "the dialog to close")


def open_page(driver, stack, query: str | None = None, collection: str = COLLECTION, key: str | None = USER,
              **params) -> None:
    url = f"{stack['url']}/ui"
    if query is not None:
        url += f"?collection={quote(collection)}&q={quote(query)}" + "".join(
            f"&{k}={quote(str(v))}" for k, v in params.items())
    driver.get(url)
    if key:
        enter_key(driver, key)        # a fresh page holds no key, and the API needs one
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", "the page")


def results(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#results > li.result")


def marks(element) -> list[str]:
    return [m.text.lower() for m in element.find_elements(By.TAG_NAME, "mark")]


def test_a_shared_search_url_renders_its_results_with_matches_highlighted(browser, stack, screens):
    open_page(browser, stack, "vitamin D calcium bone fractures", mode="hybrid", fusion="rrf", alpha="0.5")
    wait(browser, lambda d: results(d), "results")
    first = results(browser)[0]
    assert first.get_attribute("data-id") == "s1"
    assert {"vitamin", "calcium"} & set(marks(first)), marks(first)
    assert first.find_element(By.CSS_SELECTOR, ".score").text.startswith(("0.", "1."))
    # the URL's state went into the form
    assert browser.find_element(By.ID, "fusion").get_attribute("value") == "rrf"
    assert browser.find_element(By.ID, "alpha").get_attribute("value") == "0.5"
    # the key stays in memory: not in the URL, cookies or storage
    assert USER not in browser.current_url
    stored = browser.execute_script(
        "return JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
    assert USER not in stored
    shot(browser, screens, "search")


def test_explain_opens_with_each_retrievers_rank_and_score(browser, stack, screens):
    first = results(browser)[0]
    toggle = first.find_element(By.CSS_SELECTOR, ".explain-toggle")
    panel = first.find_element(By.CSS_SELECTOR, ".explain")
    assert not panel.is_displayed() and toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    wait(browser, lambda d: panel.is_displayed(), "the explain panel")
    assert toggle.get_attribute("aria-expanded") == "true"
    bars = {m.get_attribute("aria-label"): m for m in panel.find_elements(By.TAG_NAME, "meter")}
    assert {"score", "vector", "keyword"} <= set(bars), list(bars)
    for name in ("vector", "keyword"):
        assert float(bars[name].get_attribute("value")) > 0
    text = panel.text
    assert "rank 1" in text and "BM25" in text
    shot(browser, screens, "explain")


def test_the_keyboard_alone_searches_in_korean_and_opens_explain(browser, stack, screens):
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys("비타민 D 골절은" + Keys.ENTER)         # a particle the passage does not have
    wait(browser, lambda d: results(d) and results(d)[0].get_attribute("data-id") == "s16", "Korean results")
    assert "비타민" in marks(results(browser)[0])
    assert "q=%EB%B9%84%ED%83%80%EB%AF%BC" in browser.current_url     # the new query is in the URL
    # Tab from the query box to the first result's Explain button, Enter opens it
    box.click()
    for _ in range(30):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        if "explain-toggle" in (active.get_attribute("class") or ""):
            break
    else:
        raise AssertionError("Tab never reached an Explain button")
    active.send_keys(Keys.ENTER)
    assert active.get_attribute("aria-expanded") == "true"
    shot(browser, screens, "keyboard-korean")
    # Back returns to the previous search, Forward to this one (the URL carries the state)
    browser.back()
    wait(browser, lambda d: results(d) and results(d)[0].get_attribute("data-id") == "s1", "the previous search")
    assert browser.find_element(By.ID, "query").get_attribute("value") == "vitamin D calcium bone fractures"
    browser.forward()
    wait(browser, lambda d: results(d) and results(d)[0].get_attribute("data-id") == "s16", "the Korean search again")


def test_ask_streams_an_answer_with_citations_linked_to_the_sources(browser, stack, screens):
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys("How do vaccines train the immune system?")
    browser.find_element(By.ID, "ask-button").click()
    answer = browser.find_element(By.ID, "answer")
    wait(browser, lambda d: answer.get_attribute("data-state") in ("done", "error"), "the answer", timeout=90)
    assert answer.get_attribute("data-state") == "done", browser.find_element(By.ID, "message").text
    assert int(answer.get_attribute("data-deltas")) >= 2          # it came in pieces, as they were generated
    sources = browser.find_elements(By.CSS_SELECTOR, "#sources > li")
    assert sources and sources[0].get_attribute("data-id") == "s2"
    cites = answer.find_elements(By.CSS_SELECTOR, "a.citation")
    assert cites, answer.text
    ids = {s.get_attribute("id"): s.get_attribute("data-id") for s in sources}
    for a in cites:
        target = a.get_attribute("href").split("#", 1)[1]
        assert ids[target] == a.get_attribute("data-source")    # the link goes to the source it names
    assert browser.find_elements(By.CSS_SELECTOR, "#answer .cited")
    status = browser.find_element(By.ID, "answer-status").text
    assert "grounded" in status.lower()
    summary = browser.find_element(By.ID, "results-summary").text
    cites[0].click()
    assert browser.current_url.endswith("#" + cites[0].get_attribute("href").split("#", 1)[1])
    assert browser.find_element(By.ID, "results-summary").text == summary    # following a citation re-runs nothing
    shot(browser, screens, "answer")


def test_an_unknown_collection_is_shown_as_a_message(browser, stack, screens):
    open_page(browser, stack, "anything at all", collection="no-such-collection")
    msg = browser.find_element(By.ID, "message")
    wait(browser, lambda d: msg.is_displayed(), "the error message")
    assert "404" in msg.text and "no-such-collection" in msg.text, msg.text
    assert msg.get_attribute("role") == "alert"
    assert not results(browser)
    shot(browser, screens, "error")


def test_collections_create_upload_with_progress_and_delete_with_the_admin_key(browser, stack, screens):
    # a BEIR-style JSONL file (``_id``), three upload batches
    upload = stack["tmp"] / "upload.jsonl"
    docs = _docs()
    lines = [json.dumps({"_id": f"u{i}", "title": d["title"], "text": d["text"], "metadata": d["metadata"]})
             for i, d in enumerate(docs * (150 // len(docs) + 1))][:150]
    upload.write_text("\n".join(lines) + "\n")
    open_page(browser, stack)
    browser.find_element(By.ID, "tab-collections").click()
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-collection='{COLLECTION}']"), "the table")
    assert row[0].find_elements(By.TAG_NAME, "td")[1].text == str(len(docs))
    assert "view=collections" in browser.current_url
    Select(browser.find_element(By.ID, "new-embedding-model")).select_by_value("multilingual-e5-small")
    Select(browser.find_element(By.ID, "new-extra-model")).select_by_value("minilm")
    browser.find_element(By.ID, "new-name").send_keys("ui-upload" + Keys.ENTER)
    new = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-collection='ui-upload']"), "the new collection")
    assert new[0].find_elements(By.TAG_NAME, "td")[3].text == "multilingual-e5-small + minilm"
    created = stack["client"].get("/collections/ui-upload").json()
    assert created["embedding_model"] == "multilingual-e5-small"
    assert [e["embedding_model"] for e in created["extra_embedding_models"]] == ["minilm"]
    assert browser.find_element(By.ID, "upload-collection").get_attribute("value") == "ui-upload"
    browser.find_element(By.ID, "upload-file").send_keys(str(upload))
    browser.find_element(By.ID, "upload-button").click()
    status = browser.find_element(By.ID, "upload-status")
    seen = set()

    def finished(d):
        seen.add(d.find_element(By.ID, "upload-progress").get_attribute("value"))
        return "uploaded" in status.text or d.find_element(By.ID, "message").is_displayed()
    wait(browser, finished, "the upload", timeout=120)
    assert status.text.startswith("150 / 150 documents"), status.text
    assert len(seen - {"0"}) >= 2, seen                   # the bar moved through the batches
    r = stack["client"].get("/collections/ui-upload")
    assert r.json()["documents"] == 150
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-collection='ui-upload']"), "the row")
    assert row[0].find_elements(By.TAG_NAME, "td")[1].text == "150"
    shot(browser, screens, "collections")
    # delete: confirm, then the ordinary key gets 403 and the page asks for the admin key
    row[0].find_element(By.CSS_SELECTOR, "button.danger").click()
    alert = wait(browser, lambda d: _alert(d), "the confirmation")
    assert "ui-upload" in alert.text
    alert.accept()
    enter_key(browser, ADMIN, title="Admin key")
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "tr[data-collection='ui-upload']"), "the deletion")
    assert stack["client"].get("/collections/ui-upload").status_code == 404


def _alert(driver):
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


def test_a_bad_upload_line_is_named(browser, stack):
    bad = stack["tmp"] / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"title": "no id"}\n')
    browser.find_element(By.ID, "upload-file").send_keys(str(bad))
    browser.find_element(By.ID, "upload-button").click()
    msg = browser.find_element(By.ID, "message")
    wait(browser, lambda d: msg.is_displayed(), "the error")
    assert "line 2" in msg.text and "id" in msg.text, msg.text


def test_every_control_is_labelled(browser, stack):
    unlabelled = browser.execute_script("""
        return [...document.querySelectorAll('input, select, textarea, progress, meter, button')]
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
          .map(e => e.outerHTML.slice(0, 80));""")
    assert unlabelled == []


def test_the_page_holds_at_375_px_wide(browser, stack, screens):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True})
    try:
        open_page(browser, stack, "vitamin D calcium bone fractures")
        wait(browser, lambda d: results(d), "results")
        results(browser)[0].find_element(By.CSS_SELECTOR, ".explain-toggle").click()
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[1] == 375 and width[0] <= width[1], width       # no sideways scrolling
        overflow = browser.execute_script("""
            return [...document.querySelectorAll('body *')].filter(e => {
              const r = e.getBoundingClientRect();
              return r.width > 0 && (r.right > window.innerWidth + 0.5 || r.left < -0.5) && !e.closest('.table-wrap');
            }).map(e => e.tagName + '.' + e.className);""")
        assert overflow == []
        shot(browser, screens, "narrow-375")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
