"""Fixtures shared by the verification tests: each module keeps its own ``pristine`` log (made
once per module), and ``log`` / ``home`` give a test a private copy of it and its home."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.keys import FileKeyProvider
from audit.layout import HomeKeys


@pytest.fixture
def log(pristine: tuple[Path, Path], tmp_path: Path) -> Iterator[Path]:
    """A copy of the module's ``pristine`` log, for a test to tamper with."""
    copy = tmp_path / "log"
    shutil.copytree(pristine[0], copy)
    yield copy


@pytest.fixture
def home(pristine: tuple[Path, Path]) -> Path:
    return pristine[1]


def auditor(home: Path) -> FileKeyProvider:
    return FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key)
