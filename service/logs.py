"""Logging of a serving process: one JSON object per line, each carrying the id of the request
it belongs to, so a log pipeline can join a request's lines (and a search's, by `search_id`)."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

# The request being handled by this task or thread (service.telemetry.RequestTimer sets it;
# run_in_threadpool copies it into worker threads).
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def configure(level: str, fmt: str = "json") -> None:
    """Root logging for `fusionrank serve`/`learner`: `json` lines, or `text` for a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    handler.addFilter(_WithRequestId())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
