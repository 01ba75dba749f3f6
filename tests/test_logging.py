"""The ``batched`` logger: silent by default, informative once the application asks."""

from __future__ import annotations

import logging

import batched
import pytest
from conftest import run_python


def failing(items: list[int]) -> list[int]:
    if -1 in items:
        raise ValueError("bad item")
    return items


def test_a_failed_batch_is_logged_as_a_warning_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = batched.BatchProcessor(failing, batch_size=2, timeout_ms=1000)
    with (
        f,
        caplog.at_level(logging.WARNING, logger="batched"),
        pytest.raises(ValueError, match="bad item"),
    ):
        f([1, -1])
    [record] = [r for r in caplog.records if r.name == "batched"]
    assert record.levelno == logging.WARNING
    assert "failed on a batch of 2 items" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


def test_isolation_and_lifecycle_are_logged_below_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="batched"):
        f = batched.BatchProcessor(failing, batch_size=2, timeout_ms=1000, on_error="isolate")
        with f, pytest.raises(ValueError, match="bad item"):
            f([5, -1])
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "batched"]
    assert any(level == logging.DEBUG and "started" in text for level, text in messages)
    assert any(
        level == logging.INFO and "retrying it in halves" in text for level, text in messages
    )
    assert any(level == logging.DEBUG and "shut down" in text for level, text in messages)
    # Only the half holding the bad item fails, and that is the warning.
    warnings = [text for level, text in messages if level == logging.WARNING]
    assert warnings == [
        "the batch function failed on a batch of 1 items; its callers get the exception"
    ]


def test_nothing_is_printed_when_logging_is_not_configured() -> None:
    run = run_python(
        """
        import batched

        @batched.dynamically
        def failing(items):
            raise ValueError("bad")

        try:
            failing(1)
        except ValueError:
            print("caller got it")
        """,
        timeout=120,
    )
    assert run.stdout.strip() == "caller got it"
    assert run.stderr == ""
