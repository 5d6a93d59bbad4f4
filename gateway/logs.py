"""structlog configuration: JSON lines on stderr in production, readable console lines in development.

Bind ``request_id``, ``caller`` and ``purpose`` with structlog.contextvars in request handlers.
Never log identity numbers, names or fetched values: log counts, dataset and field *names*, and
redacted subject references (gateway.logs.redact).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

import structlog

from gateway.errors import UsageError


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of each write (a test harness or a daemon may
    replace it after logging was configured; a stream bound at configure time may be closed)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


FORMATS = ("json", "console")

#: What a filtering bound logger (structlog.make_filtering_bound_logger) has for the levels it drops.
_DROPPED = structlog.make_filtering_bound_logger(logging.CRITICAL).debug


def debug_dropped() -> bool:
    """Whether structlog, as configured now, drops debug events outright (the gateway's default
    level is WARNING): a per-call debug event (an answered call, a provider call) is then not
    built at all. Asking the logger itself would cost a logger bind on every call."""
    return getattr(structlog.get_config()["wrapper_class"], "debug", None) is _DROPPED


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """UsageError unless ``DSGW_LOG_LEVEL`` and ``DSGW_LOG_FORMAT`` (when set and not empty) are
    values :func:`configure` knows (it would otherwise fall back to its default without a word):
    a level is any name of the ``logging`` module (``debug``, ``info``, ``warn``, ...)."""
    env = os.environ if environ is None else environ
    level = env.get("DSGW_LOG_LEVEL")
    if level and not isinstance(logging.getLevelNamesMapping().get(level.upper()), int):
        known = ", ".join(name.lower() for name in logging.getLevelNamesMapping())
        raise UsageError(f"DSGW_LOG_LEVEL: unknown level {level[:32]!r} (one of {known})")
    fmt = env.get("DSGW_LOG_FORMAT")
    if fmt and fmt not in FORMATS:
        raise UsageError(f"DSGW_LOG_FORMAT: unknown format {fmt[:32]!r} (one of {', '.join(FORMATS)})")


def configure(*, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog once per process. ``DSGW_LOG_FORMAT=json|console`` and ``DSGW_LOG_LEVEL``
    override the defaults (JSON unless stderr is a terminal)."""
    fmt = os.environ.get("DSGW_LOG_FORMAT")
    use_json = json if json is not None else (fmt == "json" if fmt else not sys.stderr.isatty())
    name = (level or os.environ.get("DSGW_LOG_LEVEL") or "WARNING").upper()
    lvl = logging.getLevelNamesMapping().get(name, logging.WARNING)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        # one write per line (message and newline together): the lines of several processes
        # sharing stderr (the workers) never run into each other
        logger_factory=structlog.WriteLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(renderer, lvl)


_HANDLER_NAME = "dsgw-structlog"


def _route_standard_logging(renderer: structlog.typing.Processor, level: int) -> None:
    """Records of the standard ``logging`` module (gRPC's Python layer, asyncio's "exception was
    never retrieved", libraries) rendered like our own lines, one per record with any traceback
    inside it (JSON: an ``exception`` member), instead of Python's plain-text last resort."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))


def redact(identifier: str) -> str:
    """A subject reference safe for logs: the last two characters only."""
    return f"***{identifier[-2:]}" if identifier else ""
