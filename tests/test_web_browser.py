"""The console in a real browser: ``dicomdrop web`` runs as its own process and Debian's Chromium,
driven by Playwright, works through a pending match left by a real ``dicomdrop process`` run.

Every page the test opens is checked for accessibility (labels, names, keyboard reach; see
tests/accessibility.py). Screenshots of the main pages are kept as test artefacts in
``$DICOMDROP_SCREENSHOTS`` (default: a ``screenshots`` folder under the test's temporary
folder); the test prints where.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from accessibility import accessibility_problems
from conftest import write_config
from crash.harness import DaemonProcess, make_installation
from web_support import IDENTITY_TEXT, PASSWORD, ROLE_USERS, Site, add_user, make_site

from dicomdrop.cli import main

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dicomdrop web exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "login", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("dicomdrop web did not start")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[Site, str]]:
    """A site with a pending match and ``dicomdrop web`` serving it."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is missing (.ci/run installs it)")
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    port = _free_port()
    site = make_site(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\nsession_minutes = 30\n')
    command = [sys.executable, "-m", "dicomdrop", "web", "--config", str(site.config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process)
        yield site, url
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        log = err.decode("utf-8", "replace")
        for text in IDENTITY_TEXT:
            assert text not in log, f"identity data in the console's log: {text}"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DICOMDROP_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {folder}")
    return folder


def test_steward_links_a_pending_match_and_operator_sees_no_names(
    console: tuple[Site, str], screenshots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    site, url = console
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # The operator: holds queue and dashboard, never a name.
            operator = browser.new_page(viewport={"width": 1280, "height": 800})
            operator.goto(url + "login")
            problems += accessibility_problems(operator)
            _login(operator, url, ROLE_USERS["operator"])
            operator.goto(url + "holds")
            expect(operator.get_by_role("heading", name="Holds queue")).to_be_visible()
            problems += accessibility_problems(operator)
            expect(operator.locator("table.holds code", has_text="match.ambiguous")).to_be_visible()
            operator.screenshot(path=str(screenshots / "holds-operator.png"), full_page=True)
            operator.get_by_role("link", name=site.held_job).first.click()
            for page_url in (url + "dashboard", url + "holds", operator.url):
                operator.goto(page_url)
                content = operator.content()
                for text in IDENTITY_TEXT:
                    assert text not in content, (page_url, text)
            assert operator.get_by_role("link", name="Pending matches").count() == 0
            response = operator.goto(url + "pending/1")
            assert response is not None and response.status == 403
            operator.close()

            # The steward: compare, link, and the held job is retried and delivered.
            steward = browser.new_page(viewport={"width": 1280, "height": 800})
            _login(steward, url, ROLE_USERS["steward"])
            steward.wait_for_selector("#live")
            steward.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
            problems += accessibility_problems(steward)
            steward.get_by_role("link", name="Holds", exact=True).click()
            steward.get_by_role("link", name=site.held_job).first.click()
            expect(steward.get_by_role("button", name="Release")).to_be_visible()
            steward.screenshot(path=str(screenshots / "hold-steward.png"), full_page=True)
            problems += accessibility_problems(steward)
            steward.get_by_role("link", name="Pending match #1").click()
            expect(steward.get_by_text("Stevenson^Mark")).to_be_visible()
            expect(steward.get_by_text("Stephenson^Mark")).to_be_visible()
            steward.screenshot(path=str(screenshots / "pending.png"), full_page=True)
            problems += accessibility_problems(steward)
            steward.get_by_role("button", name=f"Link to {site.pseudonym}").click()
            expect(steward.get_by_role("status")).to_contain_text("is being retried as job")
            deadline = time.monotonic() + 120
            while steward.locator("#job-state").inner_text() != "delivered":
                assert time.monotonic() < deadline, "the retried job was not delivered"
                assert steward.locator("#job-state").inner_text() in ("claimed", "running")
                time.sleep(0.5)
                steward.reload()
            steward.screenshot(path=str(screenshots / "job-delivered.png"), full_page=True)
            problems += accessibility_problems(steward)
            archives = sorted(site.settings.paths.outbox.glob("*.zip"))
            assert len(archives) == 2
            assert all(a.name.startswith(site.pseudonym + "_") for a in archives)

            steward.get_by_role("link", name="Holds", exact=True).click()
            expect(steward.get_by_text("Nothing is held.")).to_be_visible()

            steward.get_by_role("link", name="Re-identification").click()
            steward.get_by_label("Value").fill(site.pseudonym)
            steward.get_by_label("Reason", exact=True).fill("recall of study 12")
            steward.screenshot(path=str(screenshots / "reidentify.png"), full_page=True)
            problems += accessibility_problems(steward)
            steward.get_by_role("button", name="Re-identify").click()
            expect(steward.get_by_text("Stevenson^Mark")).to_be_visible()
            assert site.pseudonym not in steward.url and "Stevenson" not in steward.url
            problems += accessibility_problems(steward)

            # A junk drop is held; the steward releases it (the files stay), then deletes them.
            junk = site.config.parent.parent / "junk"
            junk.mkdir()
            (junk / "mystery.bin").write_bytes(b"\x00\x01 not dicom")
            assert main(["process", "--no-progress", "--config", str(site.config), str(junk)]) == 3
            (held,) = site.settings.paths.quarantine.iterdir()
            steward.get_by_role("link", name="Holds", exact=True).click()
            steward.get_by_role("link", name=held.name).first.click()
            steward.get_by_label("Reason", exact=True).fill("test upload, not a study")
            steward.get_by_role("button", name="Release").click()
            expect(steward.get_by_role("status")).to_contain_text("will not be delivered")
            expect(steward.get_by_role("button", name="Retry")).to_have_count(0)
            assert (held / "reason.json").is_file()
            steward.screenshot(path=str(screenshots / "hold-released.png"), full_page=True)
            problems += accessibility_problems(steward)
            steward.get_by_role("button", name="Delete the held files").click()
            expect(steward.get_by_text("Nothing is held.")).to_be_visible()
            assert not held.exists()

            steward.get_by_role("link", name="Audit").click()
            expect(steward.get_by_role("cell", name="resolve", exact=True)).to_be_visible()
            expect(steward.get_by_role("cell", name="reidentify", exact=True)).to_be_visible()
            for action in ("quarantine.release", "quarantine.delete", "console.login"):
                expect(steward.get_by_role("cell", name=action, exact=True).first).to_be_visible()
            steward.screenshot(path=str(screenshots / "audit.png"), full_page=True)
            problems += accessibility_problems(steward)
        finally:
            browser.close()
    assert problems == []
    assert sorted(p.name for p in screenshots.iterdir()) == [
        "audit.png",
        "dashboard.png",
        "hold-released.png",
        "hold-steward.png",
        "holds-operator.png",
        "job-delivered.png",
        "pending.png",
        "reidentify.png",
    ]


def _login(page: object, url: str, name: str) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto(url)
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def test_watch_serves_the_console_when_enabled(tmp_path: Path) -> None:
    """``[web] enabled = true``: the daemon serves the console from a thread, and stops it on
    SIGTERM with exit status 0."""
    port = _free_port()
    config = make_installation(tmp_path / "site")
    text = config.read_text(encoding="utf-8")
    config.write_text(text + f'[web]\nenabled = true\nlisten = "127.0.0.1:{port}"\n')
    assert add_user(config, "anna", "steward") == 0
    daemon = DaemonProcess(config, tmp_path / "watch.log")
    try:
        daemon.wait_ready()
        _wait_until_serving(f"http://127.0.0.1:{port}/", daemon.proc)
        assert f"console on http://127.0.0.1:{port}/" in daemon.output()
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_dead()


def test_web_serves_https_with_secure_cookies(tmp_path: Path) -> None:
    """With a certificate and key, ``dicomdrop web`` speaks only TLS and marks its session
    cookie Secure."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    config = write_config(
        tmp_path / "site",
        f'[web]\nlisten = "127.0.0.1:{port}"\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n',
    )
    assert main(["init", "--config", str(config)]) == 0
    assert add_user(config, "anna", "steward") == 0
    command = [sys.executable, "-m", "dicomdrop", "web", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "dicomdrop web exited"
            try:
                url = f"https://127.0.0.1:{port}/login"
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    cookie = response.headers["set-cookie"].lower()
                    break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline, "dicomdrop web did not serve HTTPS"
                time.sleep(0.2)
        assert "secure" in cookie and "httponly" in cookie
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5)
    finally:
        process.terminate()
        process.communicate(timeout=30)
