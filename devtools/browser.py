"""A real browser and the page's real server, for the tests and the benchmarks: headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, which ``make browser`` installs) driven by Selenium,
its microphone a WAV file; ``synctalk-client web`` in its own process on a free port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
from pathlib import Path

from synctalk_ops.launched import free_port, http_process

WAIT_S = 120  # for the page to show what is waited for


def chromium_driver(microphone: Path | None = None, origin: str | None = None, untrusted_tls: bool = False):
    """Headless Chromium; ``microphone``: a WAV its fake microphone plays (looped), else a beep;
    ``origin``: a page's origin taken as secure (http:// on an address but loopback, as on the
    network bench: the page's audio worklet needs a secure context); ``untrusted_tls``: TLS
    certificates no root vouches for are taken (a bench's own TURN over TLS)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        raise RuntimeError("Debian's chromium and chromium-driver are needed: `make browser` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        "--autoplay-policy=no-user-gesture-required",  # the live tab plays the file's audio
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        *([f"--use-file-for-fake-audio-capture={microphone}"] if microphone else []),
        *([f"--unsafely-treat-insecure-origin-as-secure={origin}"] if origin else []),
        *(["--ignore-certificate-errors"] if untrusted_tls else []),
    ):
        options.add_argument(argument)
    # the path given: Selenium does not look for (or download) a driver of its own
    return webdriver.Chrome(service=Service(driver), options=options)


@contextlib.contextmanager
def page_server(triton_url: str, log: Path, started: list | None = None, host: str = "127.0.0.1", args=()):
    """``synctalk-client web`` on a free port until the block ends; then it has exited cleanly and
    nothing listens there (RuntimeError otherwise). ``started`` gets its process; ``host``: the
    address it listens on (the URL given is loopback's); ``args``: more of the command's flags."""
    port = free_port()
    command = [sys.executable, "-m", "synctalk_client.cli", "--url", triton_url, "web", "--port", str(port)]
    command += ["--host", host, *args]
    url = f"http://127.0.0.1:{port}/"
    with http_process("the page's server", command, url, log) as process:
        if started is not None:
            started.append(process)
        yield url
    if process.returncode != 0:
        raise RuntimeError(f"the page's server exited with {process.returncode}: {log.read_text()}")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError("the page's server left something listening on its port")


# -- driving the page -------------------------------------------------------------------------
def wait(browser, condition, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda _: condition())


def models_loaded(browser) -> None:
    """Wait for the page's model list (fetched at load and again on each change of tab)."""
    wait(browser, lambda: browser.execute_script("return document.body.dataset.models") == "loaded")


def switch_tab(browser, tab: str) -> None:
    element(browser, f"tab-{tab}").click()
    models_loaded(browser)


def element(browser, element_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def shown(browser, element_id: str) -> str:
    """The text of a message element, "" while it is hidden."""
    return "" if element(browser, element_id).get_attribute("hidden") else element(browser, element_id).text


def choose(browser, select_id: str, value: str) -> None:
    browser.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];"
        "if (s.value !== arguments[1]) { s.add(new Option(arguments[1], arguments[1])); s.value = arguments[1]; }",
        select_id,
        value,
    )
