"""Fixtures of the review CLI tests: the two replica logs of :func:`build_replicas` (built once per
module) and the ``--log``/``--home`` arguments that name them (a module may define its own)."""

from __future__ import annotations

import pytest

from tests.audit.review import Replicas, build_replicas


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Replicas:
    return build_replicas(tmp_path_factory.mktemp("replicas"))


@pytest.fixture(scope="module")
def logs(replicas: Replicas) -> list[str]:
    return ["--log", str(replicas.a.directory), "--log", str(replicas.b.directory)]


@pytest.fixture(scope="module")
def keys(replicas: Replicas) -> list[str]:
    return ["--home", str(replicas.home)]
