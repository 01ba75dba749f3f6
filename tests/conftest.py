"""Test-suite policy and helpers shared by every test file.

Test files import the helpers with ``from conftest import ...``: ``wait_until`` and
``await_until`` poll a condition with a hang guard, ``Gate`` holds a batch function until the
test releases it, ``in_thread`` runs a call on a thread of its own, ``in_forked_child`` runs
one in a forked child, and ``run_python`` runs a snippet in a fresh interpreter.

``BATCHED_REQUIRE_ALL=1`` (set by ``scripts/test.sh``) turns every skip into a failure, except
for tests marked ``cuda`` on a machine without CUDA: a test whose optional dependency is
missing must not pass silently as "skipped" in the project's own runs.

``BATCHED_EXPECT_INSTALLED_IN=DIR`` (set by ``scripts/check_dist.sh``) makes the run fail unless
``batched`` is imported from under ``DIR``, so that a test of the installed wheel cannot
silently test the source tree instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

REQUIRE_ALL = os.environ.get("BATCHED_REQUIRE_ALL") == "1"


# Generous guard against hangs in the shared helpers; a passing test never reaches it.
GUARD = 30.0


def _polls(predicate: Callable[[], bool], what: str, timeout: float) -> Iterator[None]:
    """Yields while ``predicate`` does not hold; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        yield


def wait_until(
    predicate: Callable[[], bool], what: str = "a condition", timeout: float = GUARD
) -> None:
    """Sleeps until ``predicate`` holds (fails the test after ``timeout`` s)."""
    for _ in _polls(predicate, what, timeout):
        time.sleep(0.002)


async def await_until(
    predicate: Callable[[], bool], what: str = "a condition", timeout: float = GUARD
) -> None:
    """Yields to the running loop until ``predicate`` holds (fails after ``timeout`` s)."""
    for _ in _polls(predicate, what, timeout):
        await asyncio.sleep(0.002)


class Gate:
    """A gate that batch functions block at until the test releases it.

    ``entered`` is set as soon as a batch reaches the gate. ``release()`` lets every waiter
    through, and later arrivals then pass at once. Threads wait with ``hold()``; coroutines
    await ``hold_async()`` on any loop without blocking it. ``release()`` may be called from
    any thread or loop.
    """

    def __init__(self, timeout: float = GUARD) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def hold(self) -> None:
        self.entered.set()
        assert self.released.wait(self.timeout), "the test never released the gate"

    async def hold_async(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        with self._lock:
            self.entered.set()
            if self.released.is_set():
                return
            self._waiting.append((loop, waiter))
        try:
            await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            raise AssertionError("the test never released the gate") from None

    def release(self) -> None:
        with self._lock:
            self.released.set()
            waiting, self._waiting = self._waiting, []
        for loop, waiter in waiting:
            # A loop that was closed meanwhile has no waiter left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, waiter)


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a waiter that timed out is cancelled already
        waiter.set_result(None)


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Runs ``call`` in a daemon thread; the list receives its result or exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def in_forked_child(child: Callable[[], object]) -> str:
    """Runs ``child()`` in a forked copy of this process and returns the ``repr`` of its
    result; fails the test with the child's traceback if it raised. The child leaves with
    ``os._exit``, without any of the parent's cleanup."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            report = repr(child())
            code = 0
        except BaseException:
            report = traceback.format_exc()
        finally:
            os.write(write, report.encode())
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        reported = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0, reported
    return reported


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` (dedented) in a fresh interpreter; fails the test unless it exits with
    status 0 within ``timeout`` s. Returns the finished process, its output captured."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the interpreter did not exit within {timeout} s; output: {expired.stdout!r}")
    assert done.returncode == 0, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done


def pytest_configure(config: pytest.Config) -> None:
    expected = os.environ.get("BATCHED_EXPECT_INSTALLED_IN")
    if expected:
        import batched

        if not os.path.realpath(batched.__file__).startswith(os.path.realpath(expected)):
            raise pytest.UsageError(
                f"batched was imported from {batched.__file__}, not from under {expected}"
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[assignment]
    if REQUIRE_ALL and report.skipped and item.get_closest_marker("cuda") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and BATCHED_REQUIRE_ALL=1 allows no skip: {reason}"
