"""The gateway's typed errors. The CLI maps them to exit code 2, the gRPC edge to status codes."""

from __future__ import annotations


class DsgwError(Exception):
    """Base of the gateway's errors. ``reason`` is machine-readable; the message is one line
    without personal data."""

    reason: str = "ERROR"


class UsageError(DsgwError):
    """Bad command-line usage, configuration or input."""

    reason = "USAGE"


class CheckFailed(DsgwError):
    """A check the command performs failed (exit 1)."""

    reason = "CHECK_FAILED"


class StartError(DsgwError):
    """The gateway cannot start: its audit log is held by another process or damaged, its port is
    taken, ... (exit 2, one line)."""

    reason = "START_FAILED"
