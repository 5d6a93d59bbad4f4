"""Running ``dsgw`` in this process for the audit CLI tests: (exit code, stdout, stderr)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.cli import main

Run = tuple[int, str, str]


def dsgw(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> None:
    """A contract error: one ``dsgw:`` line on stderr, no traceback."""
    assert err.startswith("dsgw: ") and err.count("\n") == 1 and "Traceback" not in err, err


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """``dsgw audit ARGV``."""
    return dsgw(capsys, "audit", *argv)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """``dsgw audit ARGV --json``, which must succeed: its parsed output."""
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def failed_output(out: str, err: str, *, json_out: bool) -> None:
    """The stdout of a failed check (exit 1): nothing, or with --json the problem, as ``verify``
    and ``search`` print it (``{"ok": false, "problem": {"code", "message", ...}}``), its message
    the one stderr line's."""
    if not json_out:
        assert out == ""
        return
    data = json.loads(out)
    assert data["ok"] is False and data["problem"]["code"]
    assert err == f"dsgw: {data['problem']['message']}\n"
