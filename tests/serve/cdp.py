"""A small client of the Chrome DevTools Protocol for driving Debian's headless ``chromium`` in
tests: no WebDriver, no websocket library.

Chromium started with ``--remote-debugging-pipe`` reads protocol commands from its file
descriptor 3 and writes answers and events to descriptor 4, one JSON object per message, each
ended by a NUL byte. ``Browser`` starts it that way (through a tiny Python trampoline that puts
the two pipe ends on those numbers, so nothing runs between fork and exec in this threaded test
process), opens one page target and talks to it over a flattened session.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Puts the pipe ends given as argv[1] and argv[2] on descriptors 3 and 4, then runs argv[3:].
_TRAMPOLINE = (
    "import fcntl, os, sys\n"
    "a = fcntl.fcntl(int(sys.argv[1]), fcntl.F_DUPFD, 10)\n"
    "b = fcntl.fcntl(int(sys.argv[2]), fcntl.F_DUPFD, 10)\n"
    "os.dup2(a, 3)\n"
    "os.dup2(b, 4)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


class BrowserError(RuntimeError):
    """Chromium is missing, died, timed out, or answered a command with an error."""


def chromium_path() -> str:
    """The ``chromium`` executable; ``BrowserError`` saying how to install it when missing."""
    path = shutil.which("chromium")
    if path is None:
        raise BrowserError(
            "chromium is not installed: `make test` installs it with the test Debian packages "
            "(apt-get install --no-install-recommends chromium)"
        )
    return path


class Browser:
    """Headless Chromium (run under ``nice``) with one page, driven over the DevTools pipe.

    Use as a context manager. ``events`` collects every event of the page's session
    (``{"method", "params"}``) in arrival order.
    """

    def __init__(self, width: int = 1400, height: int = 900, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        self._profile = tempfile.mkdtemp(prefix="diffembed-chromium-")
        self._log = open(Path(self._profile) / "chromium.log", "wb")  # noqa: SIM115
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [
            "nice",
            "-n",
            "15",
            chromium_path(),
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--hide-scrollbars",
        ]
        if os.geteuid() == 0:  # Chromium's sandbox refuses to run as root
            args.append("--no-sandbox")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_browser_r), str(from_browser_w), *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,  # its own process group: its helpers end with it
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.session = ""
        try:
            target = self.send("Target.createTarget", url="about:blank", _session=None)
            attached = self.send(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True, _session=None
            )
            self.session = attached["sessionId"]
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------------------- protocol
    def send(self, method: str, _session: str | None = "", **params: Any) -> dict[str, Any]:
        """Run ``method`` with ``params`` on the page's session (``_session=None``: on the
        browser) and return its result; a protocol error raises ``BrowserError``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        session = self.session if _session == "" else _session
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        """The next message (an event is also kept in ``events``)."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"chromium did not answer in {self.timeout_s} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise BrowserError(f"chromium exited; its log: {self._log.name}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message and message.get("sessionId") == self.session:
            self.events.append({"method": message["method"], "params": message["params"]})
        return message

    def wait_for_event(self, method: str, after: int = 0) -> dict[str, Any]:
        """The first ``method`` event at or after position ``after`` of ``events``, read
        until it comes."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            for event in self.events[after:]:
                if event["method"] == method:
                    return event
            self._read(deadline)

    # -------------------------------------------------------------------------- page
    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        mark = len(self.events)
        self.send("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired", mark)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        out = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in out:
            raise BrowserError(f"{expression!r} threw: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_until(self, expression: str, timeout_s: float = 10.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression!r} stayed falsy for {timeout_s} s")
            time.sleep(0.05)

    def type_text(self, text: str) -> None:
        """Type ``text`` into the focused element, as a keyboard would insert it."""
        self.send("Input.insertText", text=text)

    def press(self, key: str, shift: bool = False) -> None:
        """Press and release a key: ``"Enter"`` or ``"Tab"``."""
        codes = {"Enter": (13, "\r"), "Tab": (9, "")}
        code, text = codes[key]
        common = {"key": key, "code": key, "windowsVirtualKeyCode": code, "modifiers": 8 * shift}
        self.send("Input.dispatchKeyEvent", type="keyDown", text=text, **common)
        self.send("Input.dispatchKeyEvent", type="keyUp", **common)

    def press_enter_and_wait(self) -> None:
        """Press Enter (submitting a form) and wait for the next page's load event."""
        mark = len(self.events)
        self.press("Enter")
        self.wait_for_event("Page.loadEventFired", mark)

    def set_width(self, width: int, height: int = 900) -> None:
        """Lay the page out as on a screen ``width`` CSS pixels wide."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the viewport) at ``path``."""
        out = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(out["data"]))
        return path

    # -------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close Chromium and remove its profile."""
        try:
            if self._proc.poll() is None:
                with contextlib.suppress(BrowserError, OSError):
                    self.send("Browser.close", _session=None)
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                    self._proc.wait(10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def enable_page_domains(browser: Browser) -> None:
    """Turn on the events the page tests read: page loads, network requests, console and
    security (CSP) messages."""
    for domain in ("Page", "Network", "Log", "Runtime"):
        browser.send(f"{domain}.enable")
