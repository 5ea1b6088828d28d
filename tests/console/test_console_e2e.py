"""The operator console in headless Chromium against a running MRFC-AS with SIPp participants.

Two SIPp UEs join one conference and appear on the page without a reload; "Kick" on one makes
that UE receive BYE and its row disappear; a `read` token sees the buttons disabled. A
screenshot of the conference view (user1 talking: loud RTP sent to the media processor) is
kept under test-artifacts/console/.

Needs Debian's chromium and chromium-driver (`make deps` installs them) and the selenium
package (dev extra).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from app.mrfp.builtin.g711 import ulaw_encode
from tests.api.live import CONF_DOMAIN, start_ue
from tests.support.sipp import SippProcess, sipp_available
from tests.support.stack import PROJECT, Stack, start_stack, wait_readyz

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = PROJECT / "test-artifacts" / "console"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="Debian chromium and chromium-driver are not installed",
    ),
]

USER1 = "sip:user1_public1@home1.net"
USER2 = "sip:user2_public1@home1.net"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll the page until `probe` gives something truthy (elements may go stale meanwhile)."""
    import time

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (NoSuchElementException, StaleElementReferenceException) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path / "stack")
    try:
        wait_readyz(started.api)
        yield started
    finally:
        started.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Without the background-networking flags Chromium keeps trying Google's hosts, which a
    # closed network refuses; a fresh profile keeps runs independent.
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
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        with contextlib.suppress(WebDriverException):
            driver.quit()
        # quit() ends chromedriver and its browser; make sure of the driver by its pid.
        process = service.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)


def sign_in(driver: WebDriver, stack: Stack, token: str) -> None:
    driver.get(f"{stack.api}/console/")
    field = wait_for("the sign-in form", lambda: driver.find_element(By.ID, "token"))
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    wait_for("the conferences page", lambda: "/console/conferences" in driver.current_url)


def wait_live(driver: WebDriver) -> None:
    wait_for("the event stream", lambda: driver.find_element(By.ID, "live").text == "live")


def row_of(driver: WebDriver, uri: str) -> WebElement | None:
    rows = driver.find_elements(By.CSS_SELECTOR, f'#participants tbody tr[data-uri="{uri}"]')
    return rows[0] if rows else None


def mark_page(driver: WebDriver) -> None:
    # A reload would lose this: its survival shows the page changed in place.
    driver.execute_script("window.__sameDocument = true;")


def same_page(driver: WebDriver) -> bool:
    return driver.execute_script("return window.__sameDocument === true;") is True


def talk_lamp(driver: WebDriver, uri: str) -> str | None:
    row = row_of(driver, uri)
    return row.find_element(By.CSS_SELECTOR, ".talk").get_attribute("title") if row else None


def mrfp_rtp_port(ue: SippProcess) -> int:
    """The media processor's RTP port for this UE: the focus passes its SDP answer through."""
    for message in ue.result().received():
        match = re.search(r"^m=audio (\d+) ", message, re.M)
        if match:
            return int(match.group(1))
    raise AssertionError("no SDP answer in the UE's trace")


class Talker:
    """Sends a loud 400 Hz PCMU tone as RTP, 20 ms a packet, until stopped (RFC 3550 §5.1)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._stop = threading.Event()
        tone = (8000 * np.sin(2 * np.pi * 400 * np.arange(160) / 8000)).astype(np.int16)
        self._payload = bytes(ulaw_encode(tone))
        self._thread = threading.Thread(target=self._run, daemon=True, name="talker")
        self._thread.start()

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            seq, ts = 0, 0
            while not self._stop.wait(0.02):
                header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x5EED)
                sock.sendto(header + self._payload, ("127.0.0.1", self.port))
                seq, ts = seq + 1, ts + 160

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_console_live_view_kick_and_read_only(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    admin_token = stack.create_token("console-ops", "admin")
    read_token = stack.create_token("console-viewer", "read")
    ues: list[SippProcess] = []

    def ue(name: str, conf_user: str, user: str) -> SippProcess:
        keys = {"conf_user": conf_user, "conf_domain": CONF_DOMAIN, "ue_user": user}
        proc = start_ue("uac_join_wait_bye.xml", tmp_path / name, stack, keys, timeout=240)
        ues.append(proc)
        return proc

    driver = browser
    try:
        # -- the conferences page fills in live ------------------------------------------------
        sign_in(driver, stack, admin_token)
        wait_live(driver)
        assert driver.find_element(By.ID, "who").text == "console-ops (admin)"
        mark_page(driver)
        ue("ue1", "conf-factory1", "user1_public1")
        link = wait_for(
            "the new conference listed",
            lambda: driver.find_elements(By.CSS_SELECTOR, "#conferences tbody tr a"),
        )[0]
        conf_uri = link.text
        assert conf_uri.startswith("sip:conf-") and conf_uri.endswith(f"@{CONF_DOMAIN}")
        conf_id = conf_uri.removeprefix("sip:conf-").split("@")[0]
        wait_for(
            "the participant count",
            lambda: driver.find_element(By.CSS_SELECTOR, "#conferences td.count").text == "1",
        )
        assert same_page(driver), "the conferences page reloaded"
        row = driver.find_element(By.CSS_SELECTOR, "#conferences tbody tr")
        assert "mrfp1" in row.text
        node_chart = driver.find_element(By.ID, "node-chart")
        wait_for("the node chart", lambda: node_chart.get_attribute("data-last"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "conferences.png"))

        # -- the conference view: user1, then user2 appears without a reload ------------------
        link.click()
        wait_for("the conference view", lambda: f"/conferences/{conf_id}" in driver.current_url)
        wait_live(driver)
        wait_for("user1's row", lambda: row_of(driver, USER1))
        assert driver.find_element(By.ID, "conf-uri").text == conf_uri
        mark_page(driver)
        ue2 = ue("ue2", f"conf-{conf_id}", "user2_public1")
        row2 = wait_for("user2's row", lambda: row_of(driver, USER2))
        assert same_page(driver), "the conference view reloaded"
        wait_for("user2 connected", lambda: "connected" in (row_of(driver, USER2) or row2).text)
        assert driver.find_element(By.ID, "count").text == "2"
        # The per-conference chart is drawn (one step up per join).
        chart = driver.find_element(By.ID, "conf-chart")
        wait_for("the chart at 2", lambda: chart.get_attribute("data-last") == "2")
        assert chart.find_elements(By.CSS_SELECTOR, "svg path.line")
        # -- user1 talks (loud RTP to the media processor): the indicator follows ----------
        talker = Talker(mrfp_rtp_port(ues[0]))
        try:
            wait_for("user1 shown talking", lambda: talk_lamp(driver, USER1) == "talking")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "conference_view.png"
            assert driver.save_screenshot(str(shot)), "screenshot"
        finally:
            talker.stop()
        wait_for("user1 shown silent", lambda: talk_lamp(driver, USER1) == "silent")
        assert talk_lamp(driver, USER2) == "silent"
        assert shot.stat().st_size > 10_000

        # -- mute and lock: shown once the focus's events say so ----------------------------
        mute = row_of(driver, USER1).find_element(By.CSS_SELECTOR, "button.mute")  # type: ignore[union-attr]
        mute.click()
        wait_for(
            "user1 shown muted",
            lambda: "muted-via-focus" in (row_of(driver, USER1) or row2).text,
        )
        unmute = row_of(driver, USER1).find_element(By.CSS_SELECTOR, "button.mute")  # type: ignore[union-attr]
        assert unmute.text == "Unmute"
        unmute.click()
        wait_for("user1 shown unmuted", lambda: "connected" in (row_of(driver, USER1) or row2).text)
        driver.find_element(By.ID, "lock").click()
        locked = driver.find_element(By.ID, "conf-locked")
        wait_for("the conference shown locked", lambda: locked.text == "locked")
        assert driver.find_element(By.ID, "lock").text == "Unlock"
        driver.find_element(By.ID, "lock").click()
        wait_for("the conference shown unlocked", lambda: locked.text == "no")

        # -- kick user2: its UE gets BYE, the row goes once the server says so ---------------
        kick = wait_for(
            "user2's kick button",
            lambda: (r := row_of(driver, USER2)) and r.find_element(By.CSS_SELECTOR, "button.kick"),
        )
        assert kick.is_enabled()
        kick.click()
        result = ue2.wait(60)
        assert result.ok, result.report()
        assert result.received_requests("BYE"), "user2's UE received BYE"
        wait_for("user2's row removed", lambda: row_of(driver, USER2) is None)
        wait_for("the chart back at 1", lambda: chart.get_attribute("data-last") == "1")
        assert row_of(driver, USER1) is not None
        assert driver.find_element(By.ID, "count").text == "1"
        assert same_page(driver), "the conference view reloaded"

        # -- a read token: the same view, every action disabled ------------------------------
        driver.find_element(By.ID, "signout").click()
        wait_for("the sign-in page", lambda: driver.find_elements(By.ID, "token"))
        sign_in(driver, stack, read_token)
        driver.get(f"{stack.api}/console/conferences/{conf_id}")
        wait_live(driver)
        row1 = wait_for("user1's row (read)", lambda: row_of(driver, USER1))
        assert driver.find_element(By.ID, "who").text == "console-viewer (read)"
        for button in row1.find_elements(By.CSS_SELECTOR, "button"):
            assert not button.is_enabled(), button.text
        assert row1.find_elements(By.CSS_SELECTOR, "button.kick")
        for ident in ("lock", "end"):
            assert not driver.find_element(By.ID, ident).is_enabled(), ident
        assert not driver.find_element(By.CSS_SELECTOR, "#dial button").is_enabled()
        driver.save_screenshot(str(ARTIFACTS / "conference_view_read_only.png"))

        # -- end: user1's UE gets its BYE too ------------------------------------------------
        resp = httpx.delete(
            f"{stack.api}/api/v1/conferences/{conf_id}",
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=15,
        )
        assert resp.status_code == 204, resp.text
        first = ues[0].wait(60)
        assert first.ok, first.report()
        state = driver.find_element(By.ID, "conf-state")
        wait_for("the ended state shown", lambda: state.text == "ended")
    finally:
        for proc in ues:
            proc.stop()
