"""Export bundles built from hand-made sealed logs: build, verify offline, and reject every tamper."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from audit.checkpoint import Checkpoint, Signer, sign_checkpoint, sign_note, verify_note
from audit.entry import encode
from audit.errors import KeyFormatError, VerificationError
from audit.keys import FileKeyProvider, KeyRecord, dek_context
from audit.merkle import MerkleProver, leaf_hash
from audit.review.export import (
    FORMAT,
    BundleCheckpointError,
    BundleFormatError,
    BundleSignatureError,
    EntryContentError,
    EntryInclusionError,
    ExportEntry,
    ExportError,
    ExportLog,
    build_bundle,
    canonical_json,
    dump_bundle,
    load_bundle,
    verify_export,
)
from audit.seal import key_id_for, seal
from tests.audit.review import OTHER, access, consent, denied, local

AUDITOR = FileKeyProvider(*(lambda k: (k.public_key(), k))(X25519PrivateKey.generate()))
OTHER_AUDITOR = FileKeyProvider(*(lambda k: (k.public_key(), k))(X25519PrivateKey.generate()))
CREATED = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)


@dataclass
class FakeLog:
    """A log built by hand: sealed entries, Merkle tree, a signed checkpoint, one wrapped DEK."""

    origin: str
    signer: Signer
    sealed: list[bytes]
    payloads: list[bytes]
    dek: bytes
    record: KeyRecord
    checkpoint: bytes
    prover: MerkleProver

    @classmethod
    def make(cls, origin: str, entries: list[Any]) -> FakeLog:
        signer = Signer.generate(origin)
        dek = os.urandom(32)
        key_id = key_id_for(dek)
        record = KeyRecord(key_id, "2026-11", "", AUDITOR.wrap(dek, dek_context(origin, key_id, "2026-11")))
        payloads = [encode(e) for e in entries]
        sealed = [seal(p, dek=dek, log_id=origin, index=i) for i, p in enumerate(payloads)]
        prover = MerkleProver([leaf_hash(s) for s in sealed])
        checkpoint = sign_checkpoint(Checkpoint(origin, prover.size, prover.root()), [signer])
        return cls(origin, signer, sealed, payloads, dek, record, checkpoint, prover)

    def section(self, indices: list[int], *, decrypt: bool = False) -> ExportLog:
        return ExportLog(
            origin=self.origin,
            log_id=self.origin,
            suite="default",
            vkey=self.signer.verifier().vkey(),
            checkpoint=self.checkpoint,
            entries=tuple(
                ExportEntry(
                    index=i,
                    sealed=self.sealed[i],
                    leaf_hash=leaf_hash(self.sealed[i]),
                    proof=tuple(self.prover.inclusion_proof(i)),
                    payload=self.payloads[i] if decrypt else None,
                )
                for i in indices
            ),
        )

    def keyring(self) -> DataKeys:
        """The log's data keys as a keyring holding the auditor key would give them."""
        return DataKeys({self.record.key_id: self.dek})


@dataclass
class DataKeys:
    """A :class:`audit.seal.DataKeySource` over known data keys."""

    keys: dict[bytes, bytes]

    def data_key(self, key_id: bytes) -> bytes:
        return self.keys[key_id]


def _data_keys(logs: tuple[FakeLog, FakeLog]) -> dict[str, DataKeys]:
    return {log.origin: log.keyring() for log in logs}


@pytest.fixture(scope="module")
def logs() -> tuple[FakeLog, FakeLog]:
    a = FakeLog.make(
        "dsgw.example/gw-a",
        [access(local(2026, 11, 2, 9 + i % 9), request_id=f"a-{i}") for i in range(11)]
        + [denied(local(2026, 11, 3)), consent(local(2026, 11, 3), subject=OTHER)],
    )
    b = FakeLog.make("dsgw.example/gw-b", [access(local(2026, 11, 4), request_id=f"b-{i}") for i in range(5)])
    return a, b


@pytest.fixture(scope="module")
def exporter() -> Signer:
    return Signer.generate("auditor-office")


def _trusted(logs: tuple[FakeLog, FakeLog], exporter: Signer) -> list[str]:
    return [exporter.verifier().vkey(), *(log.signer.verifier().vkey() for log in logs)]


@pytest.fixture(scope="module")
def bundle(logs: tuple[FakeLog, FakeLog], exporter: Signer) -> dict[str, Any]:
    a, b = logs
    return build_bundle(
        [a.section([0, 3, 11, 12], decrypt=True), b.section([1, 4])],
        exporter,
        created=CREATED,
        note="inspection 2026-17",
        trusted=[exporter.verifier(), a.signer.verifier(), b.signer.verifier()],
    )


def resign(bundle: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """Re-sign a (tampered) bundle, as an exporter who controls its key would."""
    unsigned = {k: v for k, v in bundle.items() if k != "signatures"}
    text = canonical_json(unsigned) + b"\n"
    lines = sign_note(text, [signer])[len(text) + 1 :].decode().splitlines()
    return dict(unsigned, signatures=lines)


# --- building and verifying -------------------------------------------------------------------


def test_bundle_verifies_offline(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer
) -> None:
    assert bundle["format"] == FORMAT
    assert bundle["created"] == "2026-11-10T09:00:00Z"
    result = verify_export(dump_bundle(bundle), _trusted(logs, exporter))
    assert result.signed_by == ("auditor-office",)
    assert result.note == "inspection 2026-17"
    assert [(v.origin, v.tree_size, v.entries, v.decrypted, v.content_checked) for v in result.logs] == [
        ("dsgw.example/gw-a", 13, 4, 4, 0),
        ("dsgw.example/gw-b", 5, 2, 0, 0),
    ]
    assert [(e.origin, e.index) for e in result.entries] == [("dsgw.example/gw-a", i) for i in (0, 3, 11, 12)]
    assert result.entries[0].entry.request_id == "a-0"
    assert result.to_json()["entries"] == 6


def test_auditor_checks_decrypted_content(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer
) -> None:
    result = verify_export(bundle, _trusted(logs, exporter), data_keys=_data_keys(logs))
    assert [v.content_checked for v in result.logs] == [4, 0]
    wrong = {logs[0].origin: DataKeys({logs[0].record.key_id: os.urandom(32)})}
    with pytest.raises(EntryContentError, match="do not open"):
        verify_export(bundle, _trusted(logs, exporter), data_keys=wrong)


def test_a_bundle_carries_no_data_key(bundle: dict[str, Any]) -> None:
    """A data key opens its whole retention period: a bundle carrying it would open (and, after a
    shredding, resurrect) entries it does not contain. The decrypted bundle carries payloads only."""
    assert [section["keys"] for section in bundle["logs"]] == [[], []]
    text = json.dumps(bundle)
    assert "wrapped" not in text


def test_legacy_bundle_with_keys_is_still_checked_by_the_auditor(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer
) -> None:
    legacy = copy.deepcopy(bundle)
    record = logs[0].record
    legacy["logs"][0]["keys"] = [
        {"key_id": record.key_id.hex(), "period": record.period, **record.wrapped.to_json()}
    ]
    legacy = resign(legacy, exporter)
    result = verify_export(legacy, _trusted(logs, exporter), auditor=AUDITOR)
    assert [v.content_checked for v in result.logs] == [4, 0]
    with pytest.raises(EntryContentError, match="does not unwrap"):
        verify_export(legacy, _trusted(logs, exporter), auditor=OTHER_AUDITOR)


def test_bundle_is_a_signed_note_for_any_verifier(bundle: dict[str, Any], exporter: Signer) -> None:
    unsigned = {k: v for k, v in bundle.items() if k != "signatures"}
    note = canonical_json(unsigned) + b"\n\n" + "".join(line + "\n" for line in bundle["signatures"]).encode()
    text, names = verify_note(note, [exporter.verifier()])
    assert names == ["auditor-office"]
    assert json.loads(text) == unsigned


def test_bundle_file_round_trip(bundle: dict[str, Any]) -> None:
    assert load_bundle(dump_bundle(bundle)) == bundle
    with pytest.raises(BundleFormatError):
        load_bundle(b"not json")
    with pytest.raises(BundleFormatError):
        load_bundle(b"[1, 2]")


def test_log_key_alone_can_sign_the_bundle(logs: tuple[FakeLog, FakeLog]) -> None:
    a, _ = logs
    bundle = build_bundle([a.section([2])], a.signer)
    assert verify_export(bundle, [a.signer.verifier().vkey()]).signed_by == (a.origin,)


def test_build_refuses_what_would_not_verify(logs: tuple[FakeLog, FakeLog], exporter: Signer) -> None:
    a, b = logs
    with pytest.raises(ValueError, match="once"):
        build_bundle([a.section([1]), a.section([2])], exporter)
    section = a.section([1])
    broken = ExportLog(**{**section.__dict__, "entries": (b.section([1]).entries[0],)})
    with pytest.raises(EntryInclusionError):
        build_bundle([broken], exporter)


# --- tampering --------------------------------------------------------------------------------

Tamper = Callable[[dict[str, Any]], None]


def _flip_b64(text: str, at: int = 5) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _set_entry_json(bundle: dict[str, Any]) -> None:
    bundle["logs"][0]["entries"][0]["entry"]["caller"] = "civil_affairs"


def _swap_payload(bundle: dict[str, Any]) -> None:
    # a forger replaces a decrypted entry by another valid one and shows it consistently
    entries = bundle["logs"][0]["entries"]
    entries[0]["payload"], entries[0]["entry"] = entries[1]["payload"], entries[1]["entry"]


def _false_shred(bundle: dict[str, Any]) -> None:
    # an exporter withholds a decrypted entry's details by marking it shredded
    item = bundle["logs"][0]["entries"][0]
    del item["payload"], item["entry"]
    item["shredded"] = {"period": "2026-11", "shredded_at": "2026-12-01T00:00:00Z"}


def _garbage_payload(bundle: dict[str, Any]) -> None:
    bundle["logs"][0]["entries"][0]["payload"] = base64.b64encode(b"\xff\xff\xff").decode()


def _flip_sealed(bundle: dict[str, Any]) -> None:
    item = bundle["logs"][1]["entries"][0]
    item["sealed"] = _flip_b64(item["sealed"])


def _consistent_leaf_wrong_index(bundle: dict[str, Any]) -> None:
    bundle["logs"][1]["entries"][0]["index"] = 0


def _flip_proof(bundle: dict[str, Any]) -> None:
    item = bundle["logs"][1]["entries"][1]
    item["proof"][0] = _flip_b64(item["proof"][0])


def _drop_proof(bundle: dict[str, Any]) -> None:
    bundle["logs"][1]["entries"][1]["proof"].pop()


def _swap_sealed_between_logs(bundle: dict[str, Any]) -> None:
    a, b = bundle["logs"][0]["entries"][0], bundle["logs"][1]["entries"][0]
    b["sealed"], b["leaf_hash"] = a["sealed"], a["leaf_hash"]


def _alter_checkpoint(bundle: dict[str, Any]) -> None:
    section = bundle["logs"][0]
    body, _, sigs = section["checkpoint"].partition("\n\n")
    origin, size, root = body.split("\n")
    section["checkpoint"] = f"{origin}\n{int(size) + 1}\n{root}\n\n{sigs}"


def _rename_origin(bundle: dict[str, Any]) -> None:
    bundle["logs"][0]["origin"] = bundle["logs"][0]["log_id"] = "dsgw.example/gw-z"


def _rename_log_id(bundle: dict[str, Any]) -> None:
    """Another log id than the origin: the content check would look up another log's keyring."""
    bundle["logs"][0]["log_id"] = "not-the-log"


def _duplicate_entry(bundle: dict[str, Any]) -> None:
    entries = bundle["logs"][1]["entries"]
    entries.append(copy.deepcopy(entries[-1]))


def _bad_base64(bundle: dict[str, Any]) -> None:
    bundle["logs"][1]["entries"][0]["leaf_hash"] = "not base64!"


def _unknown_member(bundle: dict[str, Any]) -> None:
    bundle["extra"] = 1


def _missing_entries(bundle: dict[str, Any]) -> None:
    del bundle["logs"][1]["entries"]


def _unknown_suite(bundle: dict[str, Any]) -> None:
    bundle["logs"][1]["suite"] = "rot13"


@pytest.mark.parametrize(
    ("tamper", "error", "auditor"),
    [
        (_set_entry_json, EntryContentError, False),
        (_swap_payload, EntryContentError, True),
        (_false_shred, EntryContentError, True),
        (_garbage_payload, EntryContentError, False),
        (_flip_sealed, EntryInclusionError, False),
        (_consistent_leaf_wrong_index, EntryInclusionError, False),
        (_flip_proof, EntryInclusionError, False),
        (_drop_proof, EntryInclusionError, False),
        (_swap_sealed_between_logs, EntryInclusionError, False),
        (_alter_checkpoint, BundleCheckpointError, False),
        (_rename_origin, BundleCheckpointError, False),
        (_rename_log_id, BundleFormatError, False),
        (_duplicate_entry, BundleFormatError, False),
        (_bad_base64, BundleFormatError, False),
        (_unknown_member, BundleFormatError, False),
        (_missing_entries, BundleFormatError, False),
        (_unknown_suite, BundleFormatError, False),
    ],
)
def test_each_tamper_is_rejected_even_when_re_signed(
    bundle: dict[str, Any],
    logs: tuple[FakeLog, FakeLog],
    exporter: Signer,
    tamper: Tamper,
    error: type[ExportError],
    auditor: bool,
) -> None:
    tampered = copy.deepcopy(bundle)
    tamper(tampered)
    trusted = _trusted(logs, exporter)
    # as is, the signature no longer verifies (a malformed bundle is named as such, first)
    with pytest.raises(BundleFormatError if error is BundleFormatError else BundleSignatureError):
        verify_export(tampered, trusted)
    # re-signed by the exporter, the specific check still fails
    with pytest.raises(error) as caught:
        verify_export(resign(tampered, exporter), trusted, data_keys=_data_keys(logs) if auditor else None)
    assert isinstance(caught.value, VerificationError)
    assert OTHER not in str(caught.value)


def test_swapped_payload_passes_without_the_auditor_key(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer
) -> None:
    """Documented limit: without the auditor key, the plaintext rests on the exporter's signature."""
    tampered = copy.deepcopy(bundle)
    _swap_payload(tampered)
    verify_export(resign(tampered, exporter), _trusted(logs, exporter))


def test_an_auditor_key_without_the_logs_keyring_checks_nothing_and_says_so(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer
) -> None:
    """Asked to check content (an auditor key) with no keyring to check it with: fail closed
    (it passed with content_checked 0)."""
    with pytest.raises(EntryContentError, match="cannot be checked without its log's keyring"):
        verify_export(bundle, _trusted(logs, exporter), auditor=AUDITOR)


def test_signature_checks(bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer) -> None:
    a, b = logs
    log_keys = [a.signer.verifier().vkey(), b.signer.verifier().vkey()]
    with pytest.raises(BundleSignatureError, match="does not verify"):
        verify_export(bundle, log_keys)  # the exporter is not trusted
    for lines in ([], None, ["not a signature line"], [bundle["signatures"][0] + "\nmore"]):
        stripped = dict(bundle, signatures=lines)
        with pytest.raises(BundleSignatureError):
            verify_export(stripped, _trusted(logs, exporter))
    impostor = Signer.generate("auditor-office")
    with pytest.raises(BundleSignatureError):
        verify_export(resign(bundle, impostor), _trusted(logs, exporter))


def test_checkpoint_key_must_be_trusted_and_the_sections(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer
) -> None:
    a, b = logs
    with pytest.raises(BundleCheckpointError, match="not trusted"):
        verify_export(bundle, [exporter.verifier().vkey(), a.signer.verifier().vkey()])
    # claiming the exporter's (trusted) key as the log's key does not help: it did not sign
    tampered = copy.deepcopy(bundle)
    tampered["logs"][1]["vkey"] = exporter.verifier().vkey()
    with pytest.raises(BundleCheckpointError, match="not signed by the log's key"):
        verify_export(resign(tampered, exporter), _trusted(logs, exporter))
    # a checkpoint signed by a stranger for the same origin
    stranger = Signer.generate(b.origin)
    forged = copy.deepcopy(bundle)
    forged["logs"][1]["vkey"] = stranger.verifier().vkey()
    forged["logs"][1]["checkpoint"] = sign_checkpoint(
        Checkpoint(b.origin, b.prover.size, b.prover.root()), [stranger]
    ).decode()
    with pytest.raises(BundleCheckpointError):
        verify_export(resign(forged, exporter), _trusted(logs, exporter))


def test_format_and_trusted_key_errors(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer
) -> None:
    with pytest.raises(BundleFormatError, match="not a dsgw-audit-export/1"):
        verify_export(dict(bundle, format="other/1"), _trusted(logs, exporter))
    with pytest.raises(KeyFormatError):
        verify_export(bundle, ["not a key"])
    with pytest.raises(KeyFormatError):
        verify_export(bundle, [])


def _first(bundle: dict[str, Any], log: int = 1) -> dict[str, Any]:
    entry: dict[str, Any] = bundle["logs"][log]["entries"][0]
    return entry


E = "'logs[1].entries[0]"


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b: _first(b).update(sealed="not base64!"), f"{E}.sealed' is not valid base64"),
        (lambda b: _first(b).update(index="zero"), f"{E}.index' is not an integer"),
        (lambda b: _first(b).update(index=1.0), f"{E}.index' is not an integer"),
        (lambda b: _first(b).update(index=2**53 + 1), f"{E}.index' is out of range"),
        (lambda b: _first(b).update(index=-1), f"{E}.index' is out of range"),
        (lambda b: _first(b).update(proof=None), f"{E}.proof' is not a list"),
        (lambda b: _first(b).pop("leaf_hash"), f"{E}.leaf_hash' is not a base64 string"),
        (lambda b: _first(b, 0).pop("entry"), "'logs[0].entries[0].entry' is missing"),
        (lambda b: _first(b, 0)["entry"].update(n=2**60), "'logs[0].entries[0].entry.n' is an integer"),
        (lambda b: b.update(logs={}), "member 'logs' is not a list"),
        (lambda b: b["logs"][0].pop("checkpoint"), "'logs[0].checkpoint' is missing"),
        (lambda b: b["logs"].append(7), "'logs[2]' is not an object"),
    ],
)
def test_malformed_content_is_a_format_error_before_the_signature(
    bundle: dict[str, Any], logs: tuple[FakeLog, FakeLog], exporter: Signer, tamper: Tamper, message: str
) -> None:
    """Well-formedness is checked first and names the member, signed or not."""
    tampered = copy.deepcopy(bundle)
    tamper(tampered)
    for candidate in (tampered, resign_lenient(tampered, exporter)):
        with pytest.raises(BundleFormatError, match=re.escape(message)) as caught:
            verify_export(candidate, _trusted(logs, exporter))
        assert "safe integer domain" not in str(caught.value)
        assert caught.value.reason == "EXPORT_FORMAT"


def resign_lenient(bundle: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """:func:`resign`, or the bundle as is when canonical JSON cannot carry it."""
    try:
        return resign(bundle, signer)
    except ValueError:
        return bundle


def test_canonical_json() -> None:
    assert canonical_json({"b": [1, "é", {"z": None, "a": True}], "a": "\u2028\n"}) == (
        '{"a":"\u2028\\n","b":[1,"é",{"a":true,"z":null}]}'.encode()
    )
    assert canonical_json({"x": [1.5, 1e21]}) == b'{"x":[1.5,1e+21]}'
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical_json({"x": 2**60})
