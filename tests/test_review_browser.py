"""The labelling page in headless Chromium (Debian's chromium + chromium-driver, driven by
selenium): keyboard shortcuts and buttons label reviews, each label is on disk before the next
review shows, progress is shown, and review text is displayed, never run as HTML."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reviewpipe.review.auth import AnnotatorTokens
from reviewpipe.review.queue import read_queue, write_queue
from reviewpipe.review.server import ReviewServer
from reviewpipe.review.session import ReviewSession
from reviewpipe.review.store import Claims, LabelStore, ReviewLock, read_labels

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "Chromium not installed (apt-get install chromium chromium-driver; .ci/run does)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TEXTS = {
    "a": "Runs small, but the colour is lovely.",
    "b": "The <b>zipper</b> broke & I sent it back.",
    "c": "Labelled already by bob.",
    "d": "Fine for the price.",
    "e": "Itchy fabric, would not buy again.",
}


def queue_record(review_id: str) -> dict:
    return {
        "review_id": review_id,
        "text": TEXTS[review_id],
        "predicted_label": 0,
        "probabilities": {"-1": 0.3, "0": 0.4, "1": 0.3},
        "confidence": 0.4,
        "created_at": "2026-01-01T00:00:00.000+00:00",
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """(page URL, labels folder, ana's token): the review server with ana as its one annotator."""
    write_queue([queue_record(k) for k in TEXTS], str(tmp_path / "queue"))
    lock = ReviewLock(tmp_path / "state")
    LabelStore(tmp_path / "labels", "bob", lock).append("c", 1)

    def open_session(name: str) -> ReviewSession:
        return ReviewSession(
            read_queue(str(tmp_path / "queue")),
            LabelStore(tmp_path / "labels", name, lock),
            Claims(lock, 900),
            show_model_guess=False,
        )

    tokens = AnnotatorTokens()
    token = tokens.issue("ana")
    server = ReviewServer(open_session, tokens, "127.0.0.1", 0).start()
    yield f"{server.url}/", tmp_path / "labels", token
    server.stop()


@pytest.fixture
def site(served: tuple[str, Path, str]) -> tuple[str, Path]:
    """The sign-in link `reviewpipe review --annotator ana` prints: the token in the fragment."""
    url, labels_dir, token = served
    return f"{url}#token={token}", labels_dir


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def ana_labels(labels_dir: Path) -> list[tuple[str, int]]:
    return [(r["review_id"], r["label"]) for r in read_labels(labels_dir) if r["annotator"] == "ana"]


def test_label_with_keys_and_buttons(site: tuple[str, Path], browser) -> None:
    url, labels_dir = site
    wait = WebDriverWait(browser, 15)

    def shown(review_id: str) -> None:
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-review-id") == review_id)

    def progress() -> str:
        return browser.find_element(By.ID, "progress").text

    def press(key: str) -> None:
        webdriver.ActionChains(browser).send_keys(key).perform()

    browser.get(url)
    shown("a")
    assert browser.find_element(By.ID, "text").text == TEXTS["a"]
    assert progress() == "1 of 5 labelled · 0 skipped · 4 remaining"  # bob's label counts
    assert browser.find_element(By.ID, "meta").text == "review a"  # blind: no model guess shown
    assert "as ana" in browser.find_element(By.ID, "annotator").text

    press("1")  # negative
    shown("b")
    assert ana_labels(labels_dir) == [("a", -1)]  # written before the next review showed
    text = browser.find_element(By.ID, "text")
    assert text.text == TEXTS["b"] and text.find_elements(By.TAG_NAME, "b") == []  # shown, not parsed

    browser.find_element(By.ID, "label-1").click()  # positive
    shown("d")  # c was labelled by bob
    assert ana_labels(labels_dir) == [("a", -1), ("b", 1)]
    assert progress() == "3 of 5 labelled · 0 skipped · 2 remaining"

    press("s")
    shown("e")
    assert "skipped review d" in browser.find_element(By.ID, "status").text
    press("2")  # neutral
    wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
    assert ana_labels(labels_dir) == [("a", -1), ("b", 1), ("e", 0)]
    assert progress() == "4 of 5 labelled · 1 skipped · 0 remaining"
    assert browser.find_element(By.ID, "bar").get_attribute("value") == "4"

    browser.refresh()  # labelled reviews never come back; the skip holds for this session
    wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
    assert ana_labels(labels_dir) == [("a", -1), ("b", 1), ("e", 0)]


def test_page_reports_a_conflict_and_recovers(site: tuple[str, Path], browser) -> None:
    url, labels_dir = site
    wait = WebDriverWait(browser, 15)
    browser.get(url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-review-id") == "a")
    # Another annotator, on another server, labels it anyway (their claim lapsed, say).
    LabelStore(labels_dir, "carol", ReviewLock(labels_dir.parent / "state")).append("a", 0)
    browser.find_element(By.ID, "label-1").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-review-id") == "b")
    assert "already labelled" in browser.find_element(By.ID, "status").text
    assert [(r["review_id"], r["annotator"]) for r in read_labels(labels_dir) if r["review_id"] == "a"] == [
        ("a", "carol")
    ]  # not labelled twice
    assert browser.find_element(By.ID, "progress").text == "2 of 5 labelled · 0 skipped · 3 remaining"


def test_sign_in_with_a_token_and_out_again(served: tuple[str, Path, str], browser) -> None:
    url, labels_dir, token = served
    wait = WebDriverWait(browser, 15)
    browser.get(url)  # no token: the sign-in form, no review
    wait.until(lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert not browser.find_element(By.ID, "card").is_displayed()
    webdriver.ActionChains(browser).send_keys("1").perform()  # shortcuts do nothing while signed out
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.ID, "signin-button").click()
    wait.until(lambda d: "unknown token" in d.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "signin-button").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-review-id") == "a")
    assert "as ana" in browser.find_element(By.ID, "annotator").text
    browser.find_element(By.ID, "label-1").click()  # the post carries the CSRF token
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-review-id") == "b")
    assert ana_labels(labels_dir) == [("a", 1)]
    browser.refresh()  # the session cookie keeps ana signed in
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-review-id") == "b")
    browser.find_element(By.ID, "signout").click()
    wait.until(lambda d: d.find_element(By.ID, "signin").is_displayed())
    browser.refresh()
    wait.until(lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert "#token" not in browser.current_url
