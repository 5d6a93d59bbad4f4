"""Export proofs on a log of several 256-leaf tiles: built from the index's tile hashes (not from
every leaf), checked before they go into the bundle, and refused for an entry whose sealed bytes
were changed."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.checkpoints import CheckpointPolicy
from audit.index import AuditIndex
from audit.keys import FileKeyProvider
from audit.layout import HomeKeys, LogMeta
from audit.log import AuditLog
from audit.reader import LogReader as LogFiles
from audit.review import EntryRef
from audit.review.export import verify_export
from audit.review.query import AuditorKeys, LogCorrupted, LogSet
from tests.audit.crash_writer import make_log
from tests.audit.review import access, local, person

SIZE = 700  # two complete tiles and a partial one


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    log_dir, home, _ = make_log(tmp_path_factory.mktemp("tiled"))
    policy = CheckpointPolicy(every_entries=100, every_seconds=3600)
    with AuditLog.open(log_dir, home=home, index="thread", policy=policy) as log:
        log.append_many(
            access(local(2026, 11, 2 + i // 100, 9 + i % 8), subject=person(i % 50), request_id=f"r{i}")
            for i in range(SIZE)
        )
        assert log.flush_index(timeout=30)
    return log_dir, home


@pytest.fixture
def logs(tiled: tuple[Path, Path]) -> Iterator[LogSet]:
    log_dir, home = tiled
    keys = AuditorKeys(provider=FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key))
    with LogSet.open([log_dir], keys) as opened:
        yield opened


def test_proofs_come_from_the_tiles_and_verify_offline(
    tiled: tuple[Path, Path], logs: LogSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir, home = tiled

    def every_leaf(self: LogFiles, size: int) -> list[bytes]:
        raise AssertionError("the export read every leaf hash instead of the tiles")

    monkeypatch.setattr(LogFiles, "leaf_hashes", every_leaf)
    spans: list[int] = []
    real_leaves = AuditIndex.leaves

    def leaves(self: AuditIndex, start: int, stop: int) -> list[bytes]:
        spans.append(stop - start)
        return real_leaves(self, start, stop)

    monkeypatch.setattr(AuditIndex, "leaves", leaves)
    origin = LogMeta.load(log_dir).log_id
    refs = [EntryRef(origin, i) for i in (0, 255, 256, 511, 512, 699)]
    signer = logs.signer(HomeKeys(home).load().checkpoint_key, "auditor")
    bundle = logs.export(refs, signer, decrypt=True)
    result = verify_export(bundle, [LogMeta.load(log_dir).vkey])
    assert [(v.entries, v.decrypted) for v in result.logs] == [(6, 6)]
    assert [e.index for e in result.entries] == [0, 255, 256, 511, 512, 699]
    assert spans and max(spans) <= 256  # the leaves of one tile at a time, never all of them


def test_a_changed_entry_is_not_exported(tiled: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    log_dir, home = tiled
    copy = tmp_path / "log"
    shutil.copytree(log_dir, copy)
    frame = LogFiles(copy).frame(300)
    path = dict(LogFiles(copy).segments())[frame.segment]
    data = bytearray(path.read_bytes())
    data[frame.offset + 12 + len(frame.terms) + 30] ^= 0x01  # a byte of its sealed entry
    stop = frame.offset + 12 + len(frame.terms) + len(frame.sealed)
    data[stop : stop + 4] = zlib.crc32(bytes(data[frame.offset : stop])).to_bytes(4, "big")  # CRC fixed up
    path.write_bytes(bytes(data))
    keys = AuditorKeys(provider=FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key))
    origin = LogMeta.load(copy).log_id
    with LogSet.open([copy], keys) as logs:
        signer = logs.signer(HomeKeys(home).load().checkpoint_key, "auditor")
        logs.export([EntryRef(origin, 299)], signer)  # its neighbours still export
        with pytest.raises(LogCorrupted, match="entry 300: its sealed bytes do not lead"):
            logs.export([EntryRef(origin, 300)], signer)
