"""``dsgw data``: synthetic agency sources (generate) and direct adapter calls (describe, fetch, ...)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from gateway.cli import data_generate, data_query

    parser: argparse.ArgumentParser = sub.add_parser("data", help="synthetic agency data and adapter calls")
    dsub = parser.add_subparsers(dest="data_command", required=True, metavar="VERB")
    data_generate.register(dsub)
    data_query.register(dsub)
