"""The CLI's edge (``gateway.cli.main``): usage errors and refusals of the operating system are
one ``dsgw:`` line with exit 2, never a traceback."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # an export criterion given empty was dropped: the bundle held every subject's entries
        (
            ["audit", "export", "--log", "L", "--caller", "hrss", "--subject", "", "--out", "b.json"],
            "--subject",
        ),
        (["audit", "search", "--log", "L", "--since="], "--since"),
        (["consent", "list", "--home", ""], "--home"),  # was the current directory
        (["id", "check", ""], "an argument is empty"),
    ],
)
def test_an_empty_argument_is_refused_before_the_command_runs(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dsgw: {message}"), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_empty_argument_looks_only_at_options_and_arguments() -> None:
    assert cli.empty_argument(["audit", "search", "--subject", "x", "--json"]) is None
    assert cli.empty_argument(["call", "verify", "--", ""]) is None  # after --: the command's own
    assert cli.empty_argument(["x", "--a=b", "--c="]) == "--c"
    assert cli.empty_argument(["x", "-", ""]) == "an argument"


def test_an_option_whose_default_is_empty_may_be_given_empty() -> None:
    """``--operator "$OPERATOR"`` with the variable unset says the default explicitly."""
    parser = cli.build_parser()
    argv = ["call", "verify", "--operator", "", "--subject", ""]
    assert cli.empty_argument(argv, cli._empty_by_default(parser, argv)) == "--subject"
    argv = ["call", "verify", "--operator=", "--subject", "x"]
    assert cli.empty_argument(argv, cli._empty_by_default(parser, argv)) is None


def test_input_nested_too_deeply_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def deep(_args: argparse.Namespace) -> int:
        raise RecursionError("maximum recursion depth exceeded")

    class Parsed:
        def parse_args(self, _argv: object) -> argparse.Namespace:
            return argparse.Namespace(handler=deep)

    monkeypatch.setattr(cli, "build_parser", Parsed)
    assert cli.main(["audit", "verify-export", "deep.json"]) == 2
    assert capsys.readouterr().err == "dsgw: an input file is nested too deeply to read\n"
