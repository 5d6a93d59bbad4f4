"""The ``dsgw`` command line: one module per verb group, each registering its sub-commands.

Exit codes (../shared/CONTRACT.md): 0 success, 1 a check failed, 2 usage, configuration or input
error with a one-line reason on stderr and no traceback. Every command takes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from gateway import __version__
from gateway.errors import CheckFailed, DsgwError, UsageError

Handler = Callable[[argparse.Namespace], int]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def positive_int(text: str) -> int:
    """An argparse ``type`` for a count: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def check_writable_dir(path: Path, label: str) -> None:
    """UsageError naming ``label`` (the option) and ``path`` unless ``path`` is a writable
    directory or can be made one (its nearest existing ancestor is a writable directory).
    Creates nothing."""
    probe = path
    for probe in (path, *path.absolute().parents):
        if probe.exists():
            break
    if not probe.is_dir():
        raise UsageError(f"{label} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{label} {path}: {probe} is not writable")


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system refusal: the path (if any) and the reason."""
    reason = exc.strerror or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename is not None else reason


def emit(args: argparse.Namespace, payload: Any, human: str | None = None) -> None:
    """Print ``payload`` as one JSON document with --json, else ``human`` (or the JSON pretty)."""
    if getattr(args, "json", False) or human is None:
        print(json.dumps(payload, ensure_ascii=False, default=str, indent=None if args.json else 2))
    else:
        print(human)


def reads_label(fields: Sequence[str]) -> str:
    """What a predicate reads, as the human output of ``dsgw call catalogue`` and ``dsgw data
    describe`` show it after its name: `` (reads level, school_name)``, or nothing."""
    return f" (reads {', '.join(fields)})" if fields else ""


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's usage error: one line on stderr (no usage dump), exit 2.
    Sub-command parsers are of this class too. Each remembers itself in the namespace it fills,
    so that arguments left over (which the top parser reports) are reported by the verb's own
    parser, pointing to its help."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.splitlines())  # an argument with a newline stays on one line
        verb = self.prog.removeprefix("dsgw").strip()
        self.exit(2, f"dsgw: {verb + ': ' if verb else ''}{message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, "_verb_parser"):  # the innermost parser returns first
            parsed._verb_parser = self
        return parsed, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            verb: _Parser = getattr(parsed, "_verb_parser", self)
            verb.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli import audit, call, consent, data, demo, ident, pki, serve

    parser = _Parser(prog="dsgw", description="Cross-department data-sharing gateway")
    parser.add_argument("--version", action="version", version=f"dsgw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, serve, call, pki, data, audit, consent, ident):
        module.register(sub)
    return parser


def fail(message: str, code: int = 2) -> int:
    print(f"dsgw: {message}", file=sys.stderr)
    return code


def empty_argument(argv: Sequence[str], may_be_empty: Callable[[str], bool] = lambda _: False) -> str | None:
    """The option given an empty value (``--subject ''``, ``--home=``), or "an argument" for an
    empty positional one, else None; ``may_be_empty(option)`` exempts options whose empty value
    means something (their default is empty: ``--operator "$OPERATOR"``, a revocation's
    ``--note``). argparse takes ``''``, and to the commands it reads as "not given" (a search or
    export criterion silently dropped, widening what is disclosed) or, as a path, as the current
    directory (keys written to ``./keys``)."""
    for at, token in enumerate(argv):
        if token == "--":
            break
        if token.startswith("--") and "=" in token:
            name, _, value = token.partition("=")
            if not value and not may_be_empty(name):
                return name
        elif token == "":
            before = argv[at - 1] if at else ""
            if before.startswith("-") and before != "-":
                if not may_be_empty(before):
                    return before
            else:
                return "an argument"
    return None


def _empty_by_default(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Callable[[str], bool]:
    """Whether an option of the command ``argv`` names has an empty default (so that an empty
    value is that default, said explicitly)."""
    command = parser
    for token in argv:
        choices = next(
            (
                a.choices
                for a in getattr(command, "_actions", ())
                if isinstance(a, argparse._SubParsersAction)
            ),
            None,
        )
        if not isinstance(choices, dict) or token not in choices:
            break
        command = choices[token]
    actions: dict[str, argparse.Action] = getattr(command, "_option_string_actions", {})
    return lambda option: option in actions and actions[option].default == ""


def main(argv: Sequence[str] | None = None) -> int:
    from gateway import logs

    logs.configure()
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    empty = empty_argument(given, _empty_by_default(parser, given))
    if empty is not None:
        return fail(f"{empty} is empty")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except CheckFailed as exc:
        return fail(str(exc), 1)
    except DsgwError as exc:
        return fail(str(exc), 2)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except RecursionError:  # a JSON input nested deeper than the interpreter's stack
        return fail("an input file is nested too deeply to read", 2)
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the environment refused: permissions, a read-only or full disk, ...
        return fail(describe_os_error(exc), 2)
