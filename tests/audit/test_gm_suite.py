"""The ``gm`` suite end to end: SM3, SM2-signed C2SP checkpoints, the command line on a gm log.

Tamper cases run on a gm log in ``test_verify.py`` (every test there runs on both suites); here:
the SM3 and SM2 primitives against standard values and an independent SM2 implementation, the
signed-note form of SM2 keys, and every ``dsgw audit`` verb on a gm log.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from audit.checkpoint import (
    SM2_NOTE_IDENTIFIER,
    Checkpoint,
    Signer,
    Sm2PrivateKey,
    Verifier,
    open_note,
    sign_checkpoint,
)
from audit.checkpoints import CheckpointConflict, CheckpointPolicy, CheckpointStore, checkpoint_name
from audit.errors import CheckpointSignatureError, KeyFormatError, UnknownKeyError
from audit.layout import HomeKeys, LogLayoutError, LogMeta
from audit.log import AuditLog, init_log
from audit.merkle import verify_consistency, verify_inclusion
from audit.reader import LogReader
from audit.suites import SM2, sm2_z, sm3
from audit.verify import verify_log
from gateway.cli import main
from tests.audit.cli_run import dsgw, one_line
from tests.audit.crash_writer import proto
from tests.gmssl_tries import gmssl_tries


@pytest.fixture(autouse=True)
def _unbind_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


# --- primitives -------------------------------------------------------------------------------


def test_sm3_standard_vector() -> None:
    # GB/T 32905-2016, example 1
    assert sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def test_sm2_note_key_form_and_key_id() -> None:
    signer = Signer.generate("example.org/log", "sm2")
    vkey = signer.verifier().vkey()
    name, hex_id, encoded = vkey.split("+", 2)
    payload = base64.b64decode(encoded)
    public = signer.verifier().public_key_bytes
    assert payload == b"\xff" + SM2_NOTE_IDENTIFIER + public and len(public) == 64
    assert hashlib.sha256(name.encode() + b"\n" + payload).digest()[:4].hex() == hex_id
    assert Verifier.from_vkey(vkey) == signer.verifier() and Verifier.from_vkey(vkey).scheme == "sm2"
    again = Signer.from_key_string(signer.to_key_string())
    assert again.verifier().vkey() == vkey and "PRIVATE" not in repr(again)
    # a tampered private scalar no longer matches the public key
    skey = signer.to_key_string()
    parts = skey.split("+", 4)  # base64 may hold "+"
    prefix, blob = "+".join(parts[:4]), parts[4]
    raw = bytearray(base64.b64decode(blob))
    raw[1 + len(SM2_NOTE_IDENTIFIER) + 5] ^= 1
    with pytest.raises(KeyFormatError):
        Signer.from_key_string(prefix + "+" + base64.b64encode(bytes(raw)).decode())
    with pytest.raises(KeyFormatError):
        Verifier.from_vkey(f"{name}+{hex_id}+{base64.b64encode(payload[:-1]).decode()}")


def test_sm2_checkpoint_note_signature_is_sm2_with_sm3_over_the_body() -> None:
    signer = Signer.generate("dsgw.audit/gw-1/00000000-0000-0000-0000-000000000001", "sm2")
    checkpoint = Checkpoint(origin=signer.name, size=7, root_hash=sm3(b"root"))
    note = sign_checkpoint(checkpoint, [signer])
    body, _, sigline = note.partition(b"\n\n")
    blob = base64.b64decode(sigline.decode().rstrip("\n").rsplit(" ", 1)[1])
    assert blob[:4] == signer.key_id.to_bytes(4, "big")
    public = signer.verifier().public_key_bytes
    # e = SM3(Z || text), Z for the default signer id: what any SM2-with-SM3 verifier checks
    assert SM2.verify(public, body + b"\n", blob[4:])
    assert open_note(note, [signer.verifier()])[0] == checkpoint
    # randomized: a second signature differs, and both verify
    again = sign_checkpoint(checkpoint, [signer])
    assert again != note and open_note(again, [signer.verifier()])[0] == checkpoint
    with pytest.raises(CheckpointSignatureError):
        open_note(note.replace(b"\n7\n", b"\n8\n"), [signer.verifier()])
    with pytest.raises(UnknownKeyError):
        open_note(note, [Signer.generate(signer.name, "sm2").verifier()])
    with pytest.raises(UnknownKeyError):  # the same name with an Ed25519 key is another key
        open_note(note, [Signer.generate(signer.name).verifier()])


def test_sm2_interoperates_with_the_pure_python_gmssl_package() -> None:
    """Signatures cross both ways, each try with a new key (gmssl itself fails on a few:
    :mod:`tests.gmssl_tries`). A signature it rejects fails the test at once."""
    gmssl_sm2 = pytest.importorskip("gmssl.sm2")
    message = b"dsgw.audit/gw-1/x\n42\nAAAA\n"

    def attempt() -> tuple[bytes, bool, str]:
        private = Sm2PrivateKey.generate()
        d, public = private.raw[:32], private.raw[32:]
        other = gmssl_sm2.CryptSM2(private_key=d.hex(), public_key=public.hex())
        r, s = decode_dss_signature(SM2.sign(private.raw, message))
        accepted = other.verify_with_sm3(f"{r:064x}{s:064x}", message)  # ours -> gmssl
        return public, accepted, other.sign_with_sm3(message)  # gmssl -> ours

    public, accepted, rs = gmssl_tries(attempt)
    assert accepted
    der = encode_dss_signature(int(rs[:64], 16), int(rs[64:], 16))
    assert SM2.verify(public, message, der)
    assert not SM2.verify(public, message + b"x", der)
    assert len(sm2_z(public)) == 32


# --- the key files ----------------------------------------------------------------------------


def test_default_keygen_is_unchanged_and_gm_adds_only_the_sm2_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, out, _ = dsgw(capsys, "audit", "keygen", "--home", str(home), "--json")
    assert code == 0 and "checkpoint_sm2_key" not in json.loads(out)
    keys = HomeKeys(home)
    assert sorted(p.name for p in keys.directory.iterdir()) == sorted(p.name for p in keys.files())
    assert keys.load().sm2_checkpoint_key is None
    before = {p.name: p.read_bytes() for p in keys.files()}
    code, out, _ = dsgw(capsys, "audit", "keygen", "--home", str(home), "--suite", "gm", "--json")
    assert code == 0
    path = Path(json.loads(out)["checkpoint_sm2_key"])
    assert path == keys.checkpoint_sm2_key and path.stat().st_mode & 0o077 == 0
    assert {p.name: p.read_bytes() for p in keys.files()} == before
    assert isinstance(keys.load().sm2_checkpoint_key, Sm2PrivateKey)
    code, _, err = dsgw(capsys, "audit", "keygen", "--home", str(home), "--suite", "gm")
    assert code == 2 and "refusing to replace" in err
    one_line(err)
    fresh = tmp_path / "fresh"
    assert dsgw(capsys, "audit", "keygen", "--home", str(fresh), "--suite", "gm")[0] == 0
    assert HomeKeys(fresh).checkpoint_sm2_key.exists() and HomeKeys(fresh).checkpoint_key.exists()


def test_init_gm_makes_the_sm2_key_on_first_use_and_default_logs_keep_ed25519(tmp_path: Path) -> None:
    home = HomeKeys(tmp_path / "home")
    home.generate()
    keys = home.load()
    meta = init_log(tmp_path / "gm", keys, node="gw-1", suite="gm")
    assert meta.verifier.scheme == "sm2" and home.checkpoint_sm2_key.exists()
    assert home.checkpoint_sm2_key.stat().st_mode & 0o077 == 0
    assert init_log(tmp_path / "default", keys, node="gw-1").verifier.scheme == "ed25519"
    # the writer opens with the home's keys and signs with the key the vkey names
    with AuditLog.open(tmp_path / "gm", home=home.home, index="none") as log:
        log.append(proto(0))
        note = log.checkpoint_now()
    assert open_note(note, [meta.verifier])[0].size == 1
    # keys without a home cannot make an SM2 key
    bare = keys.__class__(keys.checkpoint_key, keys.blind_index_key, keys.provider)
    with pytest.raises(LogLayoutError, match="SM2"):
        init_log(tmp_path / "gm2", bare, node="gw-1", suite="gm")
    # an SM2 vkey in a default-suite log.json is refused
    data = json.loads((tmp_path / "default" / "log.json").read_text())
    data["vkey"] = meta.vkey.replace(meta.log_id, data["log_id"])
    with pytest.raises(LogLayoutError):
        LogMeta.from_json(data)


def test_store_keeps_one_note_per_size_for_randomized_signatures(tmp_path: Path) -> None:
    signer = Signer.generate("example.org/log", "sm2")
    store = CheckpointStore(tmp_path)
    first = sign_checkpoint(Checkpoint(signer.name, 3, sm3(b"a")), [signer])
    store.write(3, first)
    store.write(3, sign_checkpoint(Checkpoint(signer.name, 3, sm3(b"a")), [signer]))  # same body
    assert store.read(3) == first and store.latest() == first
    with pytest.raises(CheckpointConflict):
        store.write(3, sign_checkpoint(Checkpoint(signer.name, 3, sm3(b"b")), [signer]))


# --- the command line on a gm log -------------------------------------------------------------


@pytest.fixture
def gm_log(tmp_path: Path) -> tuple[Path, Path]:
    home, log = tmp_path / "home", tmp_path / "log"
    assert main(["audit", "keygen", "--home", str(home), "--suite", "gm", "--json"]) == 0
    assert (
        main(["audit", "init", "--log", str(log), "--home", str(home), "--node", "gw-1", "--suite", "gm"])
        == 0
    )
    # checkpoints exactly at 10, 20 and 30 (an automatic one takes the size when it runs)
    policy = CheckpointPolicy(every_entries=10_000, every_seconds=3600)
    with AuditLog.open(log, home=home, index="thread", policy=policy) as writer:
        for i in range(30):
            writer.append(proto(i))
            if (i + 1) % 10 == 0:
                writer.checkpoint_now()
        assert writer.flush_index(timeout=30)
    return log, home


def test_gm_log_vkey_checkpoint_prove_consistency_verify(
    gm_log: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, home = gm_log
    meta = LogMeta.load(log)
    assert meta.suite == "gm" and meta.verifier.scheme == "sm2"
    code, out, _ = dsgw(capsys, "audit", "vkey", "--log", str(log))
    assert code == 0 and out.strip() == meta.vkey
    name, key_hex, key_b64 = meta.vkey.split("+", 2)
    key = base64.b64decode(key_b64)
    assert key[0] == 0xFF and key[1:].startswith(SM2_NOTE_IDENTIFIER)
    assert hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == key_hex
    code, out, _ = dsgw(capsys, "audit", "checkpoint", "--log", str(log), "--json")
    assert code == 0
    cp = json.loads(out)
    note = cp["checkpoint"].encode()
    assert note == (log / "checkpoints" / "latest").read_bytes() and cp["tree_size"] == 30
    body, signatures = note.split(b"\n\n", 1)
    blob = base64.b64decode(signatures.decode().rstrip("\n").rsplit(" ", 1)[1])
    assert blob[:4].hex() == key_hex
    assert SM2.verify(key[1 + len(SM2_NOTE_IDENTIFIER) :], body + b"\n", blob[4:])

    code, out, _ = dsgw(capsys, "audit", "prove", "--log", str(log), "--index", "17", "--json")
    assert code == 0
    proof = json.loads(out)
    leaf = base64.b64decode(proof["leaf_hash"])
    assert leaf == sm3(b"\x00" + LogReader(log).frame(17).sealed)
    verify_inclusion(
        17, 30, leaf, [base64.b64decode(p) for p in proof["proof"]], base64.b64decode(proof["root_hash"]), sm3
    )
    code, out, _ = dsgw(capsys, "audit", "consistency", "--log", str(log), "--old", "10", "--json")
    assert code == 0
    c = json.loads(out)
    verify_consistency(
        10,
        30,
        base64.b64decode(c["old_root"]),
        base64.b64decode(c["new_root"]),
        [base64.b64decode(p) for p in c["proof"]],
        sm3,
    )
    kept = log.parent / "kept.note"
    kept.write_bytes(note)
    auditor = HomeKeys(home).auditor_key
    code, out, err = dsgw(
        capsys,
        "audit",
        "verify",
        "--log",
        str(log),
        "--checkpoint",
        str(kept),
        "--key",
        meta.vkey,
        "--auditor-key",
        str(auditor),
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["entries"] == 30 and report["suite"] == "gm" and report["opened"] == 30

    # a new checkpoint through the command line is SM2-signed too
    with AuditLog.open(log, home=home, index="none") as writer:
        writer.append(proto(30))
    code, out, _ = dsgw(capsys, "audit", "checkpoint", "--log", str(log), "--json")
    assert json.loads(out)["tree_size"] == 31
    assert verify_log(LogReader(log), keys=[meta.vkey]).ok


def test_gm_log_tampering_exits_1_with_one_line(
    gm_log: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, _home = gm_log
    path = log / "checkpoints" / checkpoint_name(20)
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"21"
    path.write_bytes(b"\n".join(lines))
    code, _, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 1 and "bad signature" in err
    one_line(err)  # GmSSL's trace lines on a failed verification do not reach stderr
    other = Signer.generate(LogMeta.load(log).log_id, "sm2").verifier().vkey()
    code, _, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--key", other)
    assert code == 1
    one_line(err)


def test_gm_log_export_and_verify_export(
    gm_log: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log, home = gm_log
    meta = LogMeta.load(log)
    out = tmp_path / "bundle.json"
    code, stdout, err = dsgw(
        capsys,
        "audit",
        "export",
        "--log",
        str(log),
        "--home",
        str(home),
        "--entry",
        f"{meta.log_id}#3",
        "--entry",
        f"{meta.log_id}#17",
        "--decrypt",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, err
    exported = json.loads(stdout)
    assert exported["signed_by"] == meta.log_id and exported["vkey"] == meta.vkey  # the log's SM2 key
    code, stdout, err = dsgw(capsys, "audit", "verify-export", str(out), "--log", str(log), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["verified"] and result["entries"] == 2
    bundle = json.loads(out.read_text())
    section = bundle["logs"][0]
    proof = section["entries"][0]["proof"]
    proof[0] = base64.b64encode(bytes(32)).decode() if proof else proof
    out.write_text(json.dumps(bundle))
    code, _, err = dsgw(capsys, "audit", "verify-export", str(out), "--log", str(log))
    assert code == 1
    one_line(err)
