"""Structured logs (structlog): one setup per process, `get_logger` everywhere.

`configure_logging(level, fmt)` follows `[log] level` / `[log] format`:
"json" prints one JSON object per line (for collectors), "console" a readable
coloured line. Bind context once (`log = get_logger("node").bind(node_id=…)`)
and log events with key-values: `log.info("committed", height=h, txs=n,
app_hash=…)`. Never log transaction payloads (S.4: no PHI in logs).

Standard-library loggers (hypercorn's "careledger.http") go to the same
stream at the same level.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging for this process.

    Raises ValueError for an unknown level or format.
    """
    if level not in LEVELS:
        raise ValueError("unknown log level %r" % level)
    if fmt not in ("console", "json"):
        raise ValueError("unknown log format %r" % fmt)
    out = stream if stream is not None else sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(LEVELS[level])


def get_logger(name: str, **context: Any) -> Any:
    """A structlog logger tagged with `logger=name` and any bound `context`."""
    return structlog.get_logger(name).bind(logger=name, **context)
