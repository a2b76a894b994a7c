"""The ops console in a real browser: headless Chromium (Debian's) through Selenium, against the app served on
127.0.0.1 over the test container. Also plain HTTP requests, to show nothing under /console answers without
the token. In CI (CI=true) these tests may not skip."""

from __future__ import annotations

import http.client
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from entitlement_sync.models import EventStatus, utcnow
from entitlement_sync.overview import Overview
from entitlement_sync.ports import StuckRule
from entitlement_sync.web import create_app
from tests.conftest import settle, stored_event
from tests.integration.browser import (
    full_page_screenshot,
    keep_screenshot,
    require_browser,
    serving,
    start_chromium,
    wait_until,
)
from tests.integration.console_support import CONSOLE_TOKEN, fail_an_event


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_browser()
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture
def settings(settings):
    return replace(settings, ops_console_token=CONSOLE_TOKEN)


@pytest.fixture
def console_url(container, chromium) -> Any:
    with serving(create_app(container)) as url:
        chromium.get(f"{url}/console/login")
        chromium.delete_all_cookies()  # each test starts logged out
        yield url


# Words only a page with data shows: the event's error, its payload, the overview's and customer's headings.
SECRETS_OF_THE_PAGES = {"Simulated", "api_access", "Throughput", "Subscriptions", "Attempts"}


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def click_and_wait(driver: Any, element: Any) -> None:
    """Click something that loads a page, and wait for the new page (a click does not wait for it)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = by_css(driver, "html")
    element.click()
    # Mid-navigation Chromium may answer the old page's node with "Node with given id does not belong to the
    # document" rather than as stale: ask again until it says stale (or the 30 s run out).
    wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
    wait.until(expected_conditions.staleness_of(page))


def log_in(driver: Any, token: str = CONSOLE_TOKEN) -> None:
    by_css(driver, "#token").send_keys(token)
    click_and_wait(driver, by_css(driver, "#login"))


def path_of(driver: Any) -> str:
    parts = urlsplit(driver.current_url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_login_refuses_a_wrong_token_and_then_goes_where_it_was_asked(chromium, console_url):
    chromium.get(f"{console_url}/console/events?status=failed")
    assert path_of(chromium).startswith("/console/login")
    log_in(chromium, "not-the-token")
    assert by_css(chromium, "#refused").text == "That token is not the console's token."
    assert not all_css(chromium, "#events")
    log_in(chromium)
    assert path_of(chromium) == "/console/events?status=failed"
    assert by_css(chromium, "#status").get_attribute("value") == "failed"


def test_filter_open_and_replay_an_event_until_it_is_processed(chromium, console_url, container, worker, fake_stripe):
    from selenium.webdriver.support.ui import Select

    failed = fail_an_event(container, fake_stripe, "evt_broken", "cus_1")
    fail_an_event(container, fake_stripe, "evt_other", "cus_2")
    chromium.get(f"{console_url}/console/events")
    log_in(chromium)
    assert len(all_css(chromium, "#events tbody tr")) == 2

    by_css(chromium, "#customer").send_keys("cus_1")
    Select(by_css(chromium, "#status")).select_by_value("failed")
    click_and_wait(chromium, by_css(chromium, "#apply"))
    rows = all_css(chromium, "#events tbody tr")
    assert [row.find_element("css selector", "td a").text for row in rows] == [failed]

    click_and_wait(chromium, rows[0].find_element("css selector", "td a"))
    assert by_css(chromium, "#event-status").text == "failed"
    assert '"customer": "cus_1"' in by_css(chromium, "#payload").text
    assert "HTTP 401" in by_css(chromium, "#attempts").text

    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])  # the fault is gone
    click_and_wait(chromium, by_css(chromium, "#replay"))
    assert "Replaying 1 event" in by_css(chromium, ".flash").text
    settle(container)

    def shows_processed() -> bool:
        chromium.refresh()
        return by_css(chromium, "#event-status").text == "processed"

    wait_until(shows_processed)
    assert stored_event(container, failed).status == EventStatus.PROCESSED
    assert stored_event(container, "evt_other").status == EventStatus.FAILED


def test_a_form_sent_without_its_csrf_token_is_refused(chromium, console_url, container, worker, fake_stripe):
    failed = fail_an_event(container, fake_stripe)
    chromium.get(f"{console_url}/console/events/{failed}")
    log_in(chromium)
    # Strip the hidden field, as a forged cross-site form would lack it (WebDriver's script is not the page's).
    chromium.execute_script("document.querySelector('#replay').form.querySelector('[name=csrf]').remove()")
    click_and_wait(chromium, by_css(chromium, "#replay"))
    assert "CSRF token is missing" in by_css(chromium, "main").text
    assert stored_event(container, failed).status == EventStatus.FAILED


def test_nothing_under_the_console_loads_without_the_token(chromium, console_url, container, worker, fake_stripe):
    failed = fail_an_event(container, fake_stripe)
    pages = ["/console/", "/console/events", f"/console/events/{failed}", "/console/customers/cus_1"]
    for page in pages:
        chromium.get(f"{console_url}{page}")
        assert path_of(chromium).startswith("/console/login"), page
        assert not SECRETS_OF_THE_PAGES & set(by_css(chromium, "main").text.split())

    host = urlsplit(console_url).netloc
    for page in pages:
        status, headers, body = plain_request(host, "GET", page)
        assert status == 302 and headers["location"].startswith("/console/login"), page
        assert not any(word.encode() in body for word in SECRETS_OF_THE_PAGES)
    for form in [f"/console/events/{failed}/replay", "/console/events/replay-failed", "/console/customers/cus_1/sync"]:
        status, _, _ = plain_request(host, "POST", form, body=b"csrf=guess")
        assert status == 400, form
    status, _, body = plain_request(host, "GET", "/console/login")
    assert status == 200 and not any(word.encode() in body for word in SECRETS_OF_THE_PAGES)
    assert stored_event(container, failed).status == EventStatus.FAILED


def plain_request(host: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with no cookie and no redirect followed (http.client: `responses` mocks only requests)."""
    connection = http.client.HTTPConnection(host, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, {key.lower(): value for key, value in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def test_each_page_renders_in_the_browser_on_a_desktop_and_a_phone(
    chromium, console_url, container, worker, fake_stripe, tmp_path: Path
):
    from tests.integration.console_scene import screenshot_pages, stage_a_busy_hour

    scene = stage_a_busy_hour(container, fake_stripe)
    # As deployed: Stripe calls paced at 20/s, which the overview's budget compares the sync attempts with.
    stuck = StuckRule(timedelta(seconds=10), timedelta(seconds=900))
    container.overview = Overview(container.new_session, utcnow, stuck, stripe_rate=20)
    chromium.get(f"{console_url}/console/login")
    full_page_screenshot(chromium, tmp_path / "login.png")
    keep_screenshot(tmp_path / "login.png")
    log_in(chromium)
    shots = screenshot_pages(chromium, console_url, scene, tmp_path)
    assert all(shot.stat().st_size > 10_000 for shot in shots)
    chromium.get(f"{console_url}/console/customers/{scene.customer}")
    full_page_screenshot(chromium, tmp_path / "customer-phone.png", width=390)  # a phone
    keep_screenshot(tmp_path / "customer-phone.png")
    chromium.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    )
    for page in ["/console/", "/console/events", f"/console/customers/{scene.customer}"]:
        chromium.get(f"{console_url}{page}")
        assert chromium.execute_script("return document.documentElement.scrollWidth") <= 390, page  # no sideways
    chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
