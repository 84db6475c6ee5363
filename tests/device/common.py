"""What the device test's modules share: the log line, a step's failure, polling, a free port."""

from __future__ import annotations

import socket
import time
import urllib.error


class StepFailed(Exception):
    """A step's check failed; the message says what was expected and what was seen."""


def log(msg: str) -> None:
    print(f"[device {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise StepFailed(msg)


def wait_for(what: str, fn, timeout: float, every: float = 0.5):
    """Polls `fn` until it returns something truthy; StepFailed naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = None
            err = e
        else:
            err = None
            if last:
                return last
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not within {timeout:.0f} s" + (f" (last error: {err})" if err else ""))
        time.sleep(every)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
