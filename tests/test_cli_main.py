"""The CLI's edge (``gateway.cli.main``): usage errors and refusals of the operating system are
one ``dsgw:`` line with exit 2, never a traceback."""

from __future__ import annotations

import argparse
import errno

import pytest

from gateway import cli


def test_an_operating_system_refusal_is_one_line_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(_args: argparse.Namespace) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/dsgw/out")

    class Parsed:
        def parse_args(self, _argv: object) -> argparse.Namespace:
            return argparse.Namespace(handler=refused)

    monkeypatch.setattr(cli, "build_parser", Parsed)
    assert cli.main(["id", "check", "110101199003070016"]) == 2
    err = capsys.readouterr().err
    assert err == "dsgw: /srv/dsgw/out: Permission denied\n"


def test_a_usage_error_is_one_line_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["id", "check", "--no-such-option", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dsgw: ") and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (
            ["id", "check", "X", "extra"],
            "dsgw: id check: unrecognized arguments: extra (see dsgw id check --help)",
        ),
        (["audit", "vkey", "--log", "L", "--key", "x"], "(see dsgw audit vkey --help)"),
        (["--bogus", "id", "check", "X"], "unrecognized arguments: --bogus"),
    ],
)
def test_left_over_arguments_point_to_the_verbs_own_help(
    capsys: pytest.CaptureFixture[str], argv: list[str], where: str
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and where in err
