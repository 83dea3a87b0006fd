"""Structured JSON log lines, to the console and to `<home>/logs/<service>.log`.

Each line carries the service, the request id (from a context variable or the record's `extra`) and the
trace id of the current span, so one request can be followed across services by either id.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry import trace

request_id_var: ContextVar[str | None] = ContextVar("vibewave_request_id", default=None)

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
_HANDLER_MARK = "_vibewave_handler"
LOG_FILE_BYTES = 20 * 1024 * 1024  # a service's log file rotates at this size ...
LOG_FILE_BACKUPS = 3  # ... keeping this many older ones: at most 80 MB per service


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": _service_of(record.name) or self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def _service_of(logger_name: str) -> str | None:
    """`vibewave.scheduler.queue` → `scheduler`, so services sharing a process still log their own name."""
    parts = logger_name.split(".")
    if len(parts) >= 2 and parts[0] == "vibewave" and parts[1] not in {"contracts"}:
        return parts[1].replace("_", "-")
    return None


def configure_logging(service: str, level: str, log_dir: Path | None) -> None:
    """Install the JSON handlers on the root logger (idempotent: replaces ours, keeps others')."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = JsonFormatter(service)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_dir / f"{service}.log", maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("nats", "aiohttp.access", "uvicorn.access", "faststream"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
