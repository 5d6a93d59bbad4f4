"""The pure-Python ``gmssl`` package, used as an independent SM2 implementation in
interoperability tests, itself fails on a few keys and signatures: in one ad-hoc count here,
three of 600 calls raised (a point addition that gives None: TypeError; a hex string of odd
length: binascii.Error, a ValueError). Such a try is made again with a new key or signature;
a signature gmssl rejects (False) still fails the test at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

TRIES = 8


def gmssl_tries(attempt: Callable[[], T]) -> T:
    """``attempt()`` (which makes a new key or signature each time), again while gmssl itself
    raises TypeError or ValueError, at most :data:`TRIES` times."""
    for _ in range(TRIES):
        try:
            return attempt()
        except (TypeError, ValueError):  # gmssl's own failure
            continue
    pytest.fail(f"gmssl failed on {TRIES} keys or signatures in a row")
