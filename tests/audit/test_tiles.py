"""Tile hashes: proofs from the 256-leaf tile hashes the index stores equal the naive ones, and at a
million entries read the leaves of a few tiles instead of every leaf."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoints import CheckpointPolicy
from audit.index import AuditIndex
from audit.layout import LogMeta
from audit.log import AuditLog
from audit.merkle import TILE_WIDTH, MerkleProver, root, verify_consistency, verify_inclusion
from audit.reader import LogReader
from gateway.cli import main
from tests.audit.crash_writer import make_log, proto


def leaves_of(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def naive_tiles(leaves: Sequence[bytes]) -> dict[int, bytes]:
    return {t: root(leaves[t * TILE_WIDTH : (t + 1) * TILE_WIDTH]) for t in range(len(leaves) // TILE_WIDTH)}


class Counting(Sequence[bytes]):
    """A leaf sequence that counts the leaves read and the tiles they are in."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = leaves
        self.read = 0
        self.tiles: set[int] = set()

    def __len__(self) -> int:
        return len(self.leaves)

    @overload
    def __getitem__(self, item: int) -> bytes: ...

    @overload
    def __getitem__(self, item: slice) -> Sequence[bytes]: ...

    def __getitem__(self, item: int | slice) -> bytes | Sequence[bytes]:
        got = self.leaves[item]
        if isinstance(item, slice):
            start, stop, _ = item.indices(len(self.leaves))
            self.read += len(got)
            self.tiles.update(range(start // TILE_WIDTH, (stop - 1) // TILE_WIDTH + 1))
        else:
            self.read += 1
            self.tiles.add(item // TILE_WIDTH)
        return got


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=1300),
    picks=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=3, max_size=3),
    drop=st.sets(st.integers(min_value=0, max_value=5), max_size=2),
)
def test_tiled_proofs_equal_the_naive_ones(n: int, picks: list[float], drop: set[int]) -> None:
    leaves = leaves_of(n)
    naive = MerkleProver(leaves)
    tiles = naive_tiles(leaves)
    for number in drop:  # missing tiles are computed from the leaves
        tiles.pop(number, None)
    tiled = MerkleProver(Counting(leaves), tiles=tiles)
    size = 1 + int(picks[0] * n)
    index = int(picks[1] * size)
    old = int(picks[2] * (size + 1))
    assert tiled.root() == naive.root() == root(leaves)
    assert tiled.root(size) == naive.root(size)
    assert tiled.inclusion_proof(index, size) == naive.inclusion_proof(index, size)
    assert tiled.subtree_hash(index, index + 1) == leaves[index]
    assert tiled.consistency_proof(old, size) == naive.consistency_proof(old, size)


def test_tiles_beyond_the_leaves_or_wrong_are_not_trusted_blindly() -> None:
    leaves = leaves_of(600)
    tiles = naive_tiles(leaves)
    # a tile past the leaves (the index ahead of the tree asked for) is ignored
    prover = MerkleProver(leaves[:300], tiles={**tiles, 1: b"\x00" * 32})
    assert prover.root() == root(leaves[:300])
    # a wrong tile gives a wrong root: callers compare with a signed checkpoint
    assert MerkleProver(leaves, tiles={**tiles, 1: b"\x00" * 32}).root() != root(leaves)


def test_a_million_entries_read_a_few_tiles_of_leaves() -> None:
    n = 1_000_000
    raw = [i.to_bytes(32, "big") for i in range(n)]
    leaves = Counting(raw)
    # any tile values (hashing a million leaves would dominate the test), except the true ones of
    # the tiles the proofs descend into: the proofs must verify against the root they give
    tiles = {t: hashlib.sha256(t.to_bytes(8, "big")).digest() for t in range(n // TILE_WIDTH)}
    for mine in (123_456 // TILE_WIDTH, 700_001 // TILE_WIDTH):
        tiles[mine] = root(raw[mine * TILE_WIDTH : (mine + 1) * TILE_WIDTH])
    started = time.perf_counter()
    prover = MerkleProver(leaves, tiles=tiles)
    top = prover.root()
    proof = prover.inclusion_proof(123_456)
    consistency = prover.consistency_proof(700_001)
    old_root = prover.root(700_001)
    elapsed = time.perf_counter() - started
    # the partial tiles at 1,000,000 and 700,001 and the tile of entry 123,456 (the reader's lazy
    # sequence reads each from the index once)
    assert leaves.tiles == {1_000_000 // 256, 700_001 // 256, 123_456 // 256}
    assert leaves.read < 1_000
    verify_inclusion(123_456, n, leaves[123_456], proof, top)
    verify_consistency(700_001, n, old_root, top, consistency)
    assert elapsed < 1.0, elapsed  # about 10 ms on the development machine


# --- the index and the reader -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _unbind_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("suite", ["default", "gm"])
def test_the_follower_stores_tiles_and_the_reader_proves_from_them(
    tmp_path: Path, suite: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir, home, _ = make_log(tmp_path, suite=suite)
    policy = CheckpointPolicy(every_entries=400, every_seconds=3600)
    with AuditLog.open(log_dir, home=home, index="thread", policy=policy) as log:
        for start in range(0, 1100, 100):
            log.append_many([proto(i) for i in range(start, start + 100)])
        assert log.flush_index(timeout=30)
    reader = LogReader(log_dir)
    leaves = []
    for frame in reader.frames():
        leaves.append(reader.leaf_hash(frame.sealed))
    naive = MerkleProver(leaves, reader.hash_fn)
    index = AuditIndex.open(log_dir / "index.sqlite", log_id=LogMeta.load(log_dir).log_id, readonly=True)
    try:
        stored = index.tiles(0, 10)
    finally:
        index.close()
    assert stored == {
        t: MerkleProver(leaves[t * 256 : (t + 1) * 256], reader.hash_fn).root() for t in range(4)
    }
    tiled = reader.prover(1100)
    assert type(tiled._leaves).__name__ == "_IndexLeaves"  # the tiled path is taken
    for size in (256, 999, 1100):
        assert tiled.root(size) == naive.root(size)
        assert tiled.inclusion_proof(size // 3, size) == naive.inclusion_proof(size // 3, size)
        assert tiled.consistency_proof(size // 2, size) == naive.consistency_proof(size // 2, size)
    capsys.readouterr()
    code = main(["audit", "prove", "--log", str(log_dir), "--index", "700", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["tree_size"] == 1100
    assert out["proof"] == [base64.b64encode(p).decode() for p in naive.inclusion_proof(700, 1100)]
    # without the index the reader falls back to the segments, with the same answers
    (log_dir / "index.sqlite").unlink()
    assert LogReader(log_dir).prover(1100).inclusion_proof(700) == naive.inclusion_proof(700, 1100)
