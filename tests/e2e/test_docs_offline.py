"""`/docs` (Swagger UI) and `/redoc` render every operation in a real headless Chromium cut off from the internet.

Chromium is driven over the DevTools protocol: every request a page makes is paused, and one that is not
to the api itself is failed and fails the test. The command line also cuts the rest of the network off
(no host name resolves, the proxy is a dead port), so nothing reaches out even where interception could not see it.
Chromium is Debian's package (`deploy/ci/install-chromium.sh`): without it the test fails in CI and is
skipped elsewhere.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.stack import Stack, free_port, wait_for

pytestmark = pytest.mark.e2e

RENDER_TIMEOUT = 60  # seconds for a page to show every operation (two shared cores parse megabytes of JS)
PUBLIC_PREFIXES = ("/docs", "/redoc", "/schema")  # what the pages may load: open to callers without a key
PAGES = {"/docs": "#swagger-ui", "/redoc": "redoc"}  # each page's root element, which its UI renders into
LOCAL_SCHEMES = {"data", "blob", "about"}  # never leave the browser


class Tab:
    """One Chromium tab over the DevTools protocol; each request it makes is let through only to `origin`."""

    def __init__(self, ws: ClientConnection, origin: str) -> None:
        self.ws = ws
        self.origin = origin
        self.ids = itertools.count(1)
        self.requested: list[str] = []
        self.refused: list[str] = []  # not to the api: failed instead of sent
        self.errors: list[str] = []  # uncaught exceptions in the page, for the failure message
        self.loaded = False

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send a command and return its result, handling the events that arrive meanwhile."""
        call_id = self._send(method, params)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline - time.monotonic())
            if message is None:
                raise AssertionError(f"Chromium did not answer {method} within {timeout}s")
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def pump(self, seconds: float) -> None:
        """Handle events for `seconds`: the wait between two looks at the DOM."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._receive(left)

    def missing(self, selector: str, wanted: list[str]) -> list[str] | None:
        """Which of `wanted` the element `selector` does not show yet (None while the page is navigating)."""
        expression = f"""(() => {{
            const root = document.querySelector({json.dumps(selector)});
            const text = root ? root.textContent.replace(/\\u200b/g, "") : "";
            return {json.dumps(wanted)}.filter((w) => !text.includes(w));
        }})()"""
        try:
            reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        except RuntimeError:  # the context went away with a navigation: look again
            return None
        if "exceptionDetails" in reply:
            return None
        found: list[str] = reply["result"]["value"]
        return found

    def _send(self, method: str, params: dict[str, Any]) -> int:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        return call_id

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        try:
            message: dict[str, Any] = json.loads(self.ws.recv(timeout=max(timeout, 0)))
        except TimeoutError:
            return None
        if "method" in message:
            self._on_event(message["method"], message.get("params", {}))
        return message

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            self.requested.append(url)
            if self._ours(url):
                self._send("Fetch.continueRequest", {"requestId": params["requestId"]})
            else:
                self._refuse(url)
                self._send("Fetch.failRequest", {"requestId": params["requestId"], "errorReason": "BlockedByClient"})
        elif method in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = params.get("request", params)["url"]
            if not self._ours(url) and urlsplit(url).scheme not in LOCAL_SCHEMES:
                self._refuse(url)  # also what interception does not pause (a websocket, say)
        elif method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("exception", {}).get("description", str(params)))

    def _refuse(self, url: str) -> None:
        if url not in self.refused:
            self.refused.append(url)

    def _ours(self, url: str) -> bool:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" == self.origin


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless Chromium with no network but 127.0.0.1; yields its DevTools HTTP endpoint."""
    executable = shutil.which("chromium")
    if executable is None:
        reason = "Debian's chromium is not installed (deploy/ci/install-chromium.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = (profile.parent / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            executable,
            "--headless=new",
            "--no-sandbox",  # as root (CI) Chromium refuses to start with its sandbox
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            f"--proxy-server=http://127.0.0.1:{free_port()}",  # nothing listens there
            "--proxy-bypass-list=127.0.0.1",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        active_port = Path(profile, "DevToolsActivePort")

        def port() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"chromium exited with {process.returncode}: {log.name}")
            text = active_port.read_text() if active_port.exists() else ""
            return text.split()[0] if text.strip() else None

        yield f"http://127.0.0.1:{wait_for(port, 30, 'chromium to open its DevTools port')}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def tab(chromium: str, stack: Stack) -> Iterator[Tab]:
    """A fresh tab (its own requests only), intercepting every request before it is sent."""
    with httpx.Client(base_url=chromium, trust_env=False, timeout=10) as devtools:
        target = devtools.put("/json/new?about:blank").json()
        try:
            with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
                tab = Tab(ws, stack.base_url)
                tab.call("Network.enable")
                tab.call("Fetch.enable", patterns=[{"urlPattern": "*"}])
                tab.call("Page.enable")
                tab.call("Runtime.enable")
                yield tab
        finally:
            devtools.get(f"/json/close/{target['id']}")


def operations(stack: Stack) -> list[str]:
    """Every operation's path and summary in the api's schema: what both pages must show."""
    paths = stack.client.get("/schema/openapi.json").json()["paths"]
    wanted = set(paths)
    for item in paths.values():
        wanted |= {op["summary"] for op in item.values() if isinstance(op, dict) and op.get("summary")}
    assert {"/api/qwen/generate", "/api/qwen/generate-async", "Generate"} <= wanted
    return sorted(wanted)


@pytest.mark.parametrize("page", list(PAGES))
def test_docs_page_renders_every_operation_with_no_internet(tab: Tab, stack: Stack, page: str) -> None:
    wanted = operations(stack)
    tab.call("Page.navigate", url=f"{stack.base_url}{page}")

    deadline = time.monotonic() + RENDER_TIMEOUT
    missing: list[str] | None = wanted
    while not tab.refused and time.monotonic() < deadline:
        missing = tab.missing(PAGES[page], wanted)
        if tab.loaded and missing == []:
            break
        tab.pump(0.1)

    assert not tab.refused, f"{page} asked the internet for {tab.refused}"
    assert missing == [], f"{page} did not show {missing} within {RENDER_TIMEOUT}s; page errors: {tab.errors}"
    paths = [urlsplit(url).path for url in tab.requested]
    outside = [path for path in paths if not path.startswith(PUBLIC_PREFIXES)]
    assert not outside, f"{page} loaded {outside}, outside the public {PUBLIC_PREFIXES}"
    assert any(path.startswith("/docs/assets/") for path in paths), paths
