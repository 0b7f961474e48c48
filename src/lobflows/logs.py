"""Logging set-up for the command line and the server: stdlib logging rendered by structlog.

Library code only calls ``logging.getLogger(__name__)`` and passes the event
name and ids in ``extra``. This module, used by the CLI alone, renders those
records as one line each (key=value, or JSON) with every secret value masked.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from lobflows.secrets import redactor

RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}
FIELDS_FIRST = ("event", "run_id", "flow", "step", "attempt")


def _from_record(
    logger: Any, method: str, event_dict: dict[str, Any]
) -> dict[str, Any]:
    record: logging.LogRecord = event_dict["_record"]
    message = event_dict.pop("event", "")
    fields = {
        k: v
        for k, v in record.__dict__.items()
        if k not in RESERVED and not k.startswith("_")
    }
    ordered = {k: fields.pop(k) for k in FIELDS_FIRST if k in fields}
    extra = {
        k: v for k, v in event_dict.items() if k.startswith("_") or k == "exc_info"
    }
    if record.exc_info and "exc_info" not in extra:
        extra["exc_info"] = record.exc_info
    return {**ordered, "message": message, **fields, **extra}


def _redact(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            v
            if k.startswith("_") or k == "exc_info"
            else redactor.redact_data(
                v
                if isinstance(v, (str, int, float, bool, type(None), list, dict))
                else str(v)
            )
        )
        for k, v in event_dict.items()
    }


def configure(*, level: str = "INFO", json_lines: bool = False) -> None:
    """Configure the root logger, unless the host application already did."""
    root = logging.getLogger()
    if root.handlers and not getattr(root, "_lobflows", False):
        return
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.processors.KeyValueRenderer(
            key_order=["level", *FIELDS_FIRST, "message"], drop_missing=True
        )
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _from_record,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            _redact,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.handlers = [handler]
    root.setLevel(level.upper())
    root._lobflows = True  # type: ignore[attr-defined]
    for noisy in (
        "uvicorn.access",
        "httpx",
        "httpcore",
        "aiosqlite",
        "alembic",
        "sqlalchemy",
        "mail.log",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
