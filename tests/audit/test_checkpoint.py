"""C2SP signed checkpoints (tlog-checkpoint in a signed note), and the algorithm suites."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle, suites
from audit.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    Signer,
    Verifier,
    is_valid_key_name,
    key_id,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_note,
)
from audit.errors import (
    AuditError,
    CheckpointFormatError,
    CheckpointSignatureError,
    DecryptionError,
    KeyFormatError,
    UnknownKeyError,
    UnsupportedSuite,
    VerificationError,
)

# --- the golang.org/x/mod/sumdb/note reference key and note ---------------------------------------

GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_SIGNATURE = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = GO_TEXT + f"\n— PeterNeumann {GO_SIGNATURE}\n".encode()

ROOT = merkle.root([merkle.leaf_hash(bytes([i])) for i in range(5)])
ORIGIN = "audit.dsgw.example/log"


def make_checkpoint(size: int = 5, extensions: tuple[str, ...] = ()) -> Checkpoint:
    return Checkpoint(origin=ORIGIN, size=size, root_hash=ROOT, extensions=extensions)


@pytest.fixture(scope="module")
def log_signer() -> Signer:
    return Signer.generate("audit.dsgw.example/log")


@pytest.fixture(scope="module")
def witness() -> Signer:
    return Signer.generate("witness.example")


# --- keys -------------------------------------------------------------------------------------


def test_go_verifier_key_parses_and_its_key_id_is_recomputed() -> None:
    verifier = Verifier.from_vkey(GO_VKEY)
    assert verifier.name == "PeterNeumann"
    public = base64.b64decode(GO_VKEY.split("+", 2)[2])
    assert public[0] == 0x01 and len(public) == 33
    recomputed = hashlib.sha256(b"PeterNeumann\n" + public).digest()[:4]
    assert recomputed.hex() == "c74f20a3"
    assert verifier.key_id == int.from_bytes(recomputed, "big") == key_id("PeterNeumann", public)
    assert verifier.public_key_bytes == public[1:]
    assert verifier.vkey() == GO_VKEY


def test_go_signer_key_parses_and_matches_the_verifier() -> None:
    signer = Signer.from_key_string(GO_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id == 0xC74F20A3
    assert signer.to_key_string() == GO_SKEY
    assert signer.verifier() == Verifier.from_vkey(GO_VKEY)
    assert signer.verifier().vkey() == GO_VKEY


def test_signing_the_go_text_gives_the_published_note_byte_for_byte() -> None:
    # Ed25519 is deterministic, so this pins the whole signed-note encoding.
    assert sign_note(GO_TEXT, [Signer.from_key_string(GO_SKEY)]) == GO_NOTE
    assert verify_note(GO_NOTE, [Verifier.from_vkey(GO_VKEY)]) == (GO_TEXT, ["PeterNeumann"])


def test_go_note_is_not_a_checkpoint() -> None:
    with pytest.raises(CheckpointFormatError, match="tree size"):
        open_note(GO_NOTE, [Verifier.from_vkey(GO_VKEY)])


def test_every_mangled_go_verifier_key_is_rejected() -> None:
    # As in Go's TestNewVerifier: every deletion of a substring, and every changed character.
    for i in range(len(GO_VKEY) + 1):
        for j in range(i + 1, len(GO_VKEY) + 1):
            with pytest.raises(KeyFormatError):
                Verifier.from_vkey(GO_VKEY[:i] + GO_VKEY[j:])
    for i, ch in enumerate(GO_VKEY):
        with pytest.raises(KeyFormatError):
            Verifier.from_vkey(GO_VKEY[:i] + chr(ord(ch) ^ 1) + GO_VKEY[i + 1 :])


def test_every_mangled_go_signer_key_is_rejected_without_leaking_it() -> None:
    secret = GO_SKEY.split("+", 4)[4][1:20]
    for i, ch in enumerate(GO_SKEY):
        with pytest.raises(KeyFormatError) as raised:
            Signer.from_key_string(GO_SKEY[:i] + chr(ord(ch) ^ 1) + GO_SKEY[i + 1 :])
        assert secret not in str(raised.value)
    for i in range(len(GO_SKEY)):
        with pytest.raises(KeyFormatError):
            Signer.from_key_string(GO_SKEY[:i] + GO_SKEY[i + 1 :])
    assert secret not in repr(Signer.from_key_string(GO_SKEY))


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("PeterNeumann+c74f20a3", "must be"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TX", "is not the key's"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "is not the key's"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key name"),
        ("PeterNeumann+c74f20a3+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "type 0x04"),
        ("PeterNeumann+c74f20a3+AQ==", "32 bytes"),
        ("PeterNeumann+c74f20a3+", "empty"),
    ],
)
def test_bad_verifier_keys_say_what_is_wrong(vkey: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        Verifier.from_vkey(vkey)


def test_uppercase_hex_key_id_is_accepted_and_printed_lowercase() -> None:
    verifier = Verifier.from_vkey(GO_VKEY.replace("c74f20a3", "C74F20A3"))
    assert verifier.vkey() == GO_VKEY


@pytest.mark.parametrize(
    "name", ["", "a b", "a\tb", "a+b", "a\u00a0b", "a\u3000b", "a\nb", "a\x7fb"[:2] + "\x01"]
)
def test_invalid_key_names_are_rejected(name: str) -> None:
    assert not is_valid_key_name(name)
    with pytest.raises(KeyFormatError, match="invalid key name"):
        Signer.generate(name)


def test_valid_key_names() -> None:
    for name in ("PeterNeumann", "sum.golang.org", "example.com/log", "审计日志", "a-b_c:d@e"):
        assert is_valid_key_name(name)
        signer = Signer.generate(name)
        assert Verifier.from_vkey(signer.verifier().vkey()) == signer.verifier()
        assert Signer.from_key_string(signer.to_key_string()).verifier() == signer.verifier()


# --- checkpoint bodies ------------------------------------------------------------------------


def test_checkpoint_body_is_exact() -> None:
    checkpoint = make_checkpoint(extensions=("ext one", "— ext two"))
    root_b64 = base64.b64encode(ROOT).decode()
    assert checkpoint.body() == f"{ORIGIN}\n5\n{root_b64}\next one\n— ext two\n".encode()
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    assert Checkpoint.parse(make_checkpoint().body()) == make_checkpoint()


def test_checkpoint_of_the_go_checksum_database_parses() -> None:
    # Origins may contain spaces (SHOULD-level rule); this is the sum.golang.org format.
    body = b"go.sum database tree\n31213156\n" + base64.b64encode(bytes(range(32))) + b"\n"
    checkpoint = Checkpoint.parse(body)
    assert checkpoint == Checkpoint("go.sum database tree", 31213156, bytes(range(32)))
    assert checkpoint.body() == body


def test_checkpoint_extremes() -> None:
    largest = Checkpoint(ORIGIN, 2**64 - 1, ROOT)
    assert Checkpoint.parse(largest.body()) == largest
    assert Checkpoint.parse(Checkpoint(ORIGIN, 0, merkle.empty_root()).body()).size == 0
    assert (
        Checkpoint.parse(Checkpoint(ORIGIN, 1, b"\x01" * 48).body(), hash_size=48).root_hash == b"\x01" * 48
    )


B64_ROOT = base64.b64encode(ROOT)
NON_CANONICAL_ROOT = B64_ROOT[:-2] + bytes([B64_ROOT[-2] ^ 1]) + b"="  # same bytes, other padding bits


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"origin\n5\n" + B64_ROOT, "newline"),
        (b"origin\n5\n", "lines"),
        (b"\n5\n" + B64_ROOT + b"\n", "origin is empty"),
        (b"origin\n05\n" + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n-1\n" + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n+1\n" + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n 1\n" + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n1 \n" + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n0x1\n" + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n1_000\n" + B64_ROOT + b"\n", "canonical decimal"),
        ("origin\n١\n".encode() + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n\n" + B64_ROOT + b"\n", "canonical decimal"),
        (b"origin\n18446744073709551616\n" + B64_ROOT + b"\n", "2\\*\\*64"),
        (b"origin\n5\n" + B64_ROOT[:-1] + b"\n", "base64"),
        (b"origin\n5\n" + B64_ROOT.rstrip(b"=") + b"\n", "base64"),
        (b"origin\n5\n" + NON_CANONICAL_ROOT + b"\n", "base64"),
        (b"origin\n5\n" + base64.urlsafe_b64encode(b"\xff" * 32) + b"\n", "base64"),
        (b"origin\n5\n \n", "base64"),
        (b"origin\n5\n" + base64.b64encode(ROOT[:31]) + b"\n", "31 bytes, expected 32"),
        (b"origin\n5\n" + base64.b64encode(ROOT + b"\x00") + b"\n", "33 bytes, expected 32"),
        (b"origin\n5\n" + B64_ROOT + b"\n\n", "extension line 1 is empty"),
        (b"origin\n5\n" + B64_ROOT + b"\next\n\n", "extension line 2 is empty"),
        (b"origin\r\n5\n" + B64_ROOT + b"\n", "U\\+000D"),
        (b"ori\tgin\n5\n" + B64_ROOT + b"\n", "U\\+0009"),
        (b"origin\xff\n5\n" + B64_ROOT + b"\n", "UTF-8"),
        (b"origin\x00\n5\n" + B64_ROOT + b"\n", "U\\+0000"),
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(body: bytes, message: str) -> None:
    with pytest.raises(CheckpointFormatError, match=message):
        Checkpoint.parse(body)


def test_checkpoint_construction_validates() -> None:
    for bad in (
        {"origin": ""},
        {"origin": "a\nb"},
        {"size": -1},
        {"size": 2**64},
        {"size": True},
        {"root_hash": b""},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
    ):
        fields: dict[str, object] = {"origin": ORIGIN, "size": 1, "root_hash": ROOT, "extensions": ()}
        fields.update(bad)
        with pytest.raises(CheckpointFormatError):
            Checkpoint(**fields)  # type: ignore[arg-type]
    assert Checkpoint(ORIGIN, 1, ROOT, ["x"]).extensions == ("x",)  # type: ignore[arg-type]


printable_line = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=[chr(i) for i in range(32)]),
    min_size=1,
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(
    origin=printable_line,
    size=st.integers(0, 2**64 - 1),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=st.lists(printable_line, max_size=4).map(tuple),
)
def test_checkpoint_round_trips(
    origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin, size, root_hash, extensions)
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


# --- signed notes: round trips ----------------------------------------------------------------


def test_sign_and_open_round_trip(log_signer: Signer) -> None:
    checkpoint = make_checkpoint(extensions=("timestamp 1700000000",))
    note = sign_checkpoint(checkpoint, [log_signer])
    body, signature_line = note.split(b"\n\n")
    assert body + b"\n" == checkpoint.body()
    assert signature_line.startswith("— audit.dsgw.example/log ".encode()) and signature_line.endswith(b"\n")
    blob = base64.b64decode(signature_line.split(b" ")[2])
    assert blob[:4] == log_signer.key_id.to_bytes(4, "big")
    # The signature is over the exact body bytes, final newline included.
    assert log_signer.verifier().verify(checkpoint.body(), blob[4:])
    assert not log_signer.verifier().verify(checkpoint.body()[:-1], blob[4:])
    assert open_note(note, [log_signer.verifier()]) == (checkpoint, [log_signer.name])


@settings(max_examples=25, deadline=None)
@given(
    origin=printable_line,
    size=st.integers(0, 2**64 - 1),
    root_hash=st.binary(min_size=32, max_size=32),
)
def test_signed_checkpoints_round_trip(origin: str, size: int, root_hash: bytes) -> None:
    signer = Signer.from_key_string(GO_SKEY)
    checkpoint = Checkpoint(origin, size, root_hash)
    assert open_note(sign_checkpoint(checkpoint, [signer]), [signer.verifier()]) == (
        checkpoint,
        [signer.name],
    )


def test_cosigned_note_returns_the_known_signers_in_order(log_signer: Signer, witness: Signer) -> None:
    stranger = Signer.generate("stranger.example")
    note = sign_checkpoint(make_checkpoint(), [log_signer, stranger, witness])
    verifiers = [witness.verifier(), log_signer.verifier()]
    assert open_note(note, verifiers)[1] == [log_signer.name, witness.name]
    assert open_note(note, [witness.verifier()])[1] == [witness.name]
    # The same verifier listed twice is fine.
    assert open_note(note, [witness.verifier(), witness.verifier()])[1] == [witness.name]


def test_signature_lines_are_concatenable(log_signer: Signer, witness: Signer) -> None:
    # A witness cosigns by appending its line to the log's note.
    body = make_checkpoint().body()
    note = sign_note(body, [log_signer]) + sign_note(body, [witness]).split(b"\n\n")[1]
    assert open_note(note, [log_signer.verifier(), witness.verifier()])[1] == [log_signer.name, witness.name]


def test_repeated_signature_lines_are_all_verified(log_signer: Signer) -> None:
    note = sign_checkpoint(make_checkpoint(), [log_signer])
    line = note.split(b"\n\n")[1]
    assert open_note(note + line, [log_signer.verifier()])[1] == [log_signer.name]


# --- signed notes: failures -------------------------------------------------------------------


def test_unknown_key_only_is_rejected(log_signer: Signer, witness: Signer) -> None:
    note = sign_checkpoint(make_checkpoint(), [log_signer])
    with pytest.raises(UnknownKeyError, match="no known key") as raised:
        open_note(note, [witness.verifier()])
    assert raised.value.key_names == (f"{log_signer.name}+{log_signer.key_id:08x}",)
    with pytest.raises(UnknownKeyError):
        open_note(note, [])


def test_same_name_other_key_is_an_unknown_key(log_signer: Signer) -> None:
    impostor = Signer.generate(log_signer.name)
    note = sign_checkpoint(make_checkpoint(), [impostor])
    with pytest.raises(UnknownKeyError):
        open_note(note, [log_signer.verifier()])


def test_bad_signature_from_known_key_is_rejected_even_with_a_good_one(
    log_signer: Signer, witness: Signer
) -> None:
    body = make_checkpoint().body()
    good = sign_note(body, [log_signer])
    forged_line = sign_note(make_checkpoint(size=6).body(), [witness]).split(b"\n\n")[1]
    with pytest.raises(
        CheckpointSignatureError, match=r"witness\.example\+[0-9a-f]{8} does not verify"
    ) as raised:
        open_note(good + forged_line, [log_signer.verifier(), witness.verifier()])
    assert raised.value.key_name == witness.name
    # Unknown to this verifier: ignored.
    assert open_note(good + forged_line, [log_signer.verifier()])[1] == [log_signer.name]


def test_changed_body_is_a_signature_error(log_signer: Signer) -> None:
    note = sign_checkpoint(make_checkpoint(size=5), [log_signer])
    verifiers = [log_signer.verifier()]
    for old, new in ((b"\n5\n", b"\n6\n"), (b"audit.", b"audiT."), (B64_ROOT, base64.b64encode(ROOT[::-1]))):
        with pytest.raises(CheckpointSignatureError):
            open_note(note.replace(old, new, 1), verifiers)


def test_changed_signature_bytes_and_key_id(log_signer: Signer) -> None:
    note = sign_checkpoint(make_checkpoint(), [log_signer])
    body, line = note.split(b"\n\n")
    prefix, encoded = line.rstrip(b"\n").rsplit(b" ", 1)
    blob = base64.b64decode(encoded)
    verifiers = [log_signer.verifier()]
    for position in (4, 20, 67):
        changed = bytearray(blob)
        changed[position] ^= 0x01
        with pytest.raises(CheckpointSignatureError):
            open_note(body + b"\n\n" + prefix + b" " + base64.b64encode(changed) + b"\n", verifiers)
    for position in (0, 3):
        changed = bytearray(blob)
        changed[position] ^= 0x01
        with pytest.raises(UnknownKeyError):
            open_note(body + b"\n\n" + prefix + b" " + base64.b64encode(changed) + b"\n", verifiers)
    with pytest.raises(CheckpointSignatureError):  # Ed25519 signatures are exactly 64 bytes
        open_note(body + b"\n\n" + prefix + b" " + base64.b64encode(blob[:-1]) + b"\n", verifiers)


def test_every_bit_flip_anywhere_in_a_signed_note_is_rejected(log_signer: Signer) -> None:
    checkpoint = make_checkpoint(extensions=("ext",))
    note = sign_checkpoint(checkpoint, [log_signer])
    body_length = len(checkpoint.body())
    verifiers = [log_signer.verifier()]
    for position in range(len(note)):
        for bit in (0x01, 0x20, 0x80):
            changed = bytearray(note)
            changed[position] ^= bit
            with pytest.raises(VerificationError) as raised:
                open_note(bytes(changed), verifiers)
            if position < body_length - 1:
                try:
                    Checkpoint.parse(bytes(changed[:body_length]))
                except CheckpointFormatError:
                    assert isinstance(raised.value, CheckpointFormatError)
                else:
                    assert isinstance(raised.value, CheckpointSignatureError)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda n: n.replace(b"\n\n", b"\n"), "no blank line"),
        (lambda n: n.split(b"\n\n")[0] + b"\n\n", "no signature lines"),
        (lambda n: n[:-1], "newline"),
        (lambda n: n.replace("— ".encode(), b"-- "), "does not start with"),
        (lambda n: n.replace("— ".encode(), "–".encode() + b" "), "does not start with"),
        (lambda n: n.replace("— ".encode(), "—".encode()), "does not start with"),
        (lambda n: n.replace(b"\n\n", b"\n\n\n"), "extension line 1 is empty"),
        (lambda n: n + b"\n", "no signature lines"),
        (lambda n: n.replace(b"/log ", b"/log  "), "base64"),
        (lambda n: n.replace(b"=\n", b"\n"), "base64"),
        (lambda n: n.replace(b"=\n", b"=\r\n"), "U\\+000D"),
        (lambda n: n.replace("— audit.dsgw.example/log".encode(), "— audit dsgw".encode()), "base64"),
        (lambda n: n.replace("— audit.dsgw.example/log".encode(), "— ".encode()), "invalid key name"),
        (lambda n: n.split(b"\n\n")[0] + "\n\n— a+b AAAAAAAA\n".encode(), "invalid key name"),
        (lambda n: n.split(b"\n\n")[0] + "\n\n— name AAAAAA==\n".encode(), "too short"),
        (lambda n: n.split(b"\n\n")[0] + "\n\n— name\n".encode(), "too short"),
    ],
)
def test_malformed_notes_are_rejected(log_signer: Signer, mangle: object, message: str) -> None:
    note = sign_checkpoint(make_checkpoint(), [log_signer])
    assert callable(mangle)
    with pytest.raises(CheckpointFormatError, match=message):
        open_note(mangle(note), [log_signer.verifier()])


def test_a_body_that_is_not_a_checkpoint_is_a_format_error(log_signer: Signer) -> None:
    for body in (
        b"origin\n5\n",
        b"origin\nfive\n" + B64_ROOT + b"\n",
        b"o\n5\n" + base64.b64encode(b"x" * 20) + b"\n",
    ):
        with pytest.raises(CheckpointFormatError):
            open_note(sign_note(body, [log_signer]), [log_signer.verifier()])
    # The digest size is the suite's: a 48-byte root is fine when asked for.
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, b"\x02" * 48), [log_signer])
    assert open_note(note, [log_signer.verifier()], hash_size=48)[0].root_hash == b"\x02" * 48
    with pytest.raises(CheckpointFormatError, match="48 bytes, expected 32"):
        open_note(note, [log_signer.verifier()])


def test_too_many_signatures(log_signer: Signer) -> None:
    note = sign_checkpoint(make_checkpoint(), [log_signer])
    line = note.split(b"\n\n")[1]
    assert open_note(note + line * (MAX_SIGNATURES - 1), [log_signer.verifier()])[1] == [log_signer.name]
    with pytest.raises(CheckpointFormatError, match="at most 100"):
        open_note(note + line * MAX_SIGNATURES, [log_signer.verifier()])


def test_sign_note_validates_its_inputs(log_signer: Signer) -> None:
    with pytest.raises(CheckpointFormatError, match="newline"):
        sign_note(b"no newline", [log_signer])
    with pytest.raises(CheckpointFormatError, match="empty"):
        sign_note(b"", [log_signer])
    with pytest.raises(CheckpointFormatError, match="U\\+001B"):
        sign_note(b"\x1b[31m\n", [log_signer])
    with pytest.raises(KeyFormatError, match="at least one"):
        sign_note(b"text\n", [])
    with pytest.raises(KeyFormatError, match="duplicate signer"):
        sign_note(b"text\n", [log_signer, log_signer])


def test_error_hierarchy() -> None:
    for error in (CheckpointFormatError, CheckpointSignatureError, UnknownKeyError, DecryptionError):
        assert issubclass(error, VerificationError)
    assert issubclass(VerificationError, AuditError)
    assert issubclass(KeyFormatError, AuditError) and issubclass(KeyFormatError, ValueError)
    assert not issubclass(KeyFormatError, VerificationError)
    assert CheckpointSignatureError("x", key_name="k").reason == "CHECKPOINT_SIGNATURE"


# --- algorithm suites -------------------------------------------------------------------------


def test_suites() -> None:
    assert suites.get_suite("default") is suites.DEFAULT
    assert suites.get_suite("gm") is suites.GM
    with pytest.raises(UnsupportedSuite, match="unknown algorithm suite 'nist'"):
        suites.get_suite("nist")
    for suite in (suites.DEFAULT, suites.GM):
        assert len(suite.hash_fn(b"abc")) == suite.digest_size == 32
        assert isinstance(suite.signature, suites.SignatureScheme)
        assert isinstance(suite.aead, suites.Aead)
    assert suites.DEFAULT.hash_fn(b"abc") == hashlib.sha256(b"abc").digest()
    assert (
        suites.GM.hash_fn(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert suites.DEFAULT.signature.note_type == 0x01
    assert suites.GM.signature.note_type == 0xFF


def test_ed25519_scheme_interoperates_with_note_keys() -> None:
    scheme = suites.ED25519
    private, public = scheme.generate()
    assert scheme.public_key(private) == public
    signature = scheme.sign(private, b"message")
    assert scheme.verify(public, b"message", signature)
    assert not scheme.verify(public, b"messagE", signature)
    assert not scheme.verify(public, b"message", signature[:-1])
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    assert Verifier.from_vkey(GO_VKEY).verify(b"m\n", scheme.sign(seed, b"m\n"))
    with pytest.raises(KeyFormatError):
        scheme.sign(b"short", b"m")
    with pytest.raises(KeyFormatError):
        scheme.verify(b"short", b"m", signature)


def test_sm2_without_its_library_is_unsupported() -> None:
    missing = suites.Sm2Scheme(module="gmssl_pyx_is_not_installed_here")
    for call in (
        missing.generate,
        lambda: missing.sign(bytes(96), b"m"),
        lambda: missing.verify(bytes(64), b"m", b"sig"),
        lambda: missing.public_key(bytes(96)),
    ):
        with pytest.raises(UnsupportedSuite, match="gmssl-pyx"):
            call()


def test_sm2_curve_constants_and_z_value() -> None:
    p, a, b = suites._SM2_P, suites._SM2_A, suites._SM2_B
    gx, gy = suites._SM2_GX, suites._SM2_GY
    assert (gy * gy - (gx**3 + a * gx + b)) % p == 0  # the base point is on the curve
    generator = gx.to_bytes(32, "big") + gy.to_bytes(32, "big")
    assert len(suites.sm2_z(generator)) == 32
    assert suites.sm2_z(generator) != suites.sm2_z(generator, b"other id")
    with pytest.raises(KeyFormatError):
        suites.sm2_z(generator[:-1])


@pytest.mark.parametrize("aead", [suites.AES_256_GCM, suites.SM4_GCM], ids=lambda a: a.name)
def test_aeads_round_trip_and_fail_closed(aead: suites.Aead) -> None:
    key, nonce = bytes(range(aead.key_size)), bytes(aead.nonce_size)
    sealed = aead.encrypt(key, nonce, b"entry", b"aad")
    assert len(sealed) == len(b"entry") + aead.tag_size
    assert aead.decrypt(key, nonce, sealed, b"aad") == b"entry"
    for bad_key, bad_nonce, bad_sealed, bad_aad in (
        (key, nonce, sealed, b"aaD"),
        (key, nonce, bytes([sealed[0] ^ 1]) + sealed[1:], b"aad"),
        (key, nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"aad"),
        (key, nonce, sealed[:3], b"aad"),
        (bytes(aead.key_size), nonce, sealed, b"aad"),
        (key, b"\x01" * aead.nonce_size, sealed, b"aad"),
    ):
        with pytest.raises(DecryptionError, match=re.escape(aead.name)):
            aead.decrypt(bad_key, bad_nonce, bad_sealed, bad_aad)
    with pytest.raises(KeyFormatError):
        aead.encrypt(key[:-1], nonce, b"x", b"")
    with pytest.raises(ValueError, match="nonce"):
        aead.encrypt(key, nonce[:-1], b"x", b"")


def test_sm4_gcm_known_answer_rfc_8998() -> None:
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plaintext = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    expected = bytes.fromhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
        "83DE3541E4C2B58177E065A9BF7B62EC"
    )
    assert suites.SM4_GCM.encrypt(key, nonce, plaintext, aad) == expected
    assert suites.SM4_GCM.decrypt(key, nonce, expected, aad) == plaintext
