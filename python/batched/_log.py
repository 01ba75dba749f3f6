"""The package's logger, ``logging.getLogger("batched")``.

It is silent unless the application configures logging: a ``NullHandler`` keeps Python's
last-resort handler from printing its warnings. What it reports: at WARNING, each batch the
batch function failed on (callers get the exception as well), a ``shutdown(timeout=...)`` that
returned with a worker still busy, and (once per method) many live processors of one batched
method; at INFO, ``on_error="isolate"`` retrying a failed batch in halves; at DEBUG,
processors starting, stopping and restarting after a fork.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("batched")
logger.addHandler(logging.NullHandler())
