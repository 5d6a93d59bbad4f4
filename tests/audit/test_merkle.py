"""RFC 9162 Merkle trees: published vectors, and the efficient code against a naive reference."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import merkle
from audit.errors import ConsistencyProofError, InclusionProofError, VerificationError
from audit.merkle import (
    CompactRange,
    MerkleAccumulator,
    MerkleProver,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_subtrees,
    root,
    verify_consistency,
    verify_inclusion,
)
from audit.suites import HashFn, sha256, sm3

# --- Certificate Transparency / transparency-dev reference vectors (testonly/constants.go) ----------

CT_ENTRIES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# NodeHashes()[level][index]: every complete subtree of the 8-leaf tree.
CT_NODES = [
    [
        bytes.fromhex(h)
        for h in (
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        )
    ],
    [
        bytes.fromhex(h)
        for h in (
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        )
    ],
    [
        bytes.fromhex(h)
        for h in (
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        )
    ],
    [bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
N = CT_NODES
# CompactTrees(): the peaks of the tree of each size 0..8.
CT_COMPACT = [
    [],
    [N[0][0]],
    [N[1][0]],
    [N[1][0], N[0][2]],
    [N[2][0]],
    [N[2][0], N[0][4]],
    [N[2][0], N[1][2]],
    [N[2][0], N[1][2], N[0][6]],
    [N[3][0]],
]
# (leaf index, tree size, proof) from transparency-dev/merkle proof/verify_test.go (there 1-based).
CT_INCLUSION = [
    (0, 1, []),
    (0, 8, [N[0][1], N[1][1], N[2][1]]),
    (5, 8, [N[0][4], N[1][3], N[2][0]]),
    (2, 3, [N[1][0]]),
    (1, 5, [N[0][0], N[1][1], N[0][4]]),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, [N[0][1], N[1][1], N[2][1]]),
    (6, 8, [N[1][2], N[1][3], N[2][0]]),
    (2, 5, [N[1][1], N[0][4]]),
    (6, 7, [N[1][2], N[0][6], N[2][0]]),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
EMPTY_ROOT = CT_ROOTS[0]

CT_LEAVES = [leaf_hash(entry) for entry in CT_ENTRIES]


# --- a naive reference: RFC 9162 2.1 transcribed recursively ------------------------------------


def naive_mth(leaves: Sequence[bytes], h: HashFn = sha256) -> bytes:
    n = len(leaves)
    if n == 0:
        return h(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return h(b"\x01" + naive_mth(leaves[:k], h) + naive_mth(leaves[k:], h))


def naive_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_path(m: int, leaves: Sequence[bytes], h: HashFn = sha256) -> list[tuple[bytes, bool]]:
    """PATH(m, D[n]) with, for each element, whether the sibling is on the left."""
    n = len(leaves)
    if n == 1:
        return []
    k = naive_split(n)
    if m < k:
        return [*naive_path(m, leaves[:k], h), (naive_mth(leaves[k:], h), False)]
    return [*naive_path(m - k, leaves[k:], h), (naive_mth(leaves[:k], h), True)]


def naive_subproof(m: int, leaves: Sequence[bytes], b: bool, h: HashFn = sha256) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [naive_mth(leaves, h)]
    k = naive_split(n)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], b, h), naive_mth(leaves[k:], h)]
    return [*naive_subproof(m - k, leaves[k:], False, h), naive_mth(leaves[:k], h)]


def inclusion_sides(index: int, size: int) -> list[bool]:
    """The shape of an inclusion proof: which side each sibling is on. Two (index, size) pairs with
    the same shape accept the same proofs, since the verifier computes the same hashes."""
    return [left for _, left in naive_path(index, [b"x"] * size, lambda data: b"")]


def synthetic_leaves(count: int, seed: int = 0) -> list[bytes]:
    return [hashlib.sha256(seed.to_bytes(8, "big") + i.to_bytes(8, "big")).digest() for i in range(count)]


def flip(digest: bytes, bit: int = 0) -> bytes:
    return bytes([digest[0] ^ (1 << bit)]) + digest[1:]


# --- hashing and roots --------------------------------------------------------------------------


def test_empty_tree_root_is_hash_of_empty_string() -> None:
    assert root([]) == EMPTY_ROOT == merkle.empty_root()
    assert MerkleProver([]).root() == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


def test_leaf_and_node_hash_domain_separation() -> None:
    assert leaf_hash(b"") == CT_ROOTS[1] == hashlib.sha256(b"\x00").digest()
    assert node_hash(CT_LEAVES[0], CT_LEAVES[1]) == CT_ROOTS[2]
    assert leaf_hash(b"\x01" + CT_LEAVES[0] + CT_LEAVES[1]) != CT_ROOTS[2]


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_roots_match_reference_vectors(size: int) -> None:
    leaves = CT_LEAVES[:size]
    assert root(leaves) == CT_ROOTS[size]
    assert MerkleProver(CT_LEAVES).root(size) == CT_ROOTS[size]
    assert naive_mth(leaves) == CT_ROOTS[size]
    accumulator = CompactRange()
    accumulator.extend(leaves)
    assert accumulator.root() == CT_ROOTS[size]


def test_every_complete_subtree_matches_reference_node_hashes() -> None:
    prover = MerkleProver(CT_LEAVES)
    for level, nodes in enumerate(CT_NODES):
        for index, expected in enumerate(nodes):
            assert prover.subtree_hash(index << level, (index + 1) << level) == expected


def test_split_point_is_largest_power_of_two_below_n() -> None:
    for n, k in {2: 1, 3: 2, 4: 2, 5: 4, 8: 4, 9: 8, 1000: 512, (1 << 40) + 1: 1 << 40}.items():
        assert merkle.split_point(n) == k
    with pytest.raises(ValueError):
        merkle.split_point(1)


# --- inclusion: vectors -------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "expected"), CT_INCLUSION)
def test_inclusion_proofs_match_reference_vectors(index: int, size: int, expected: list[bytes]) -> None:
    assert MerkleProver(CT_LEAVES).inclusion_proof(index, size) == expected
    assert inclusion_proof(index, CT_LEAVES[:size]) == expected
    verify_inclusion(index, size, CT_LEAVES[index], expected, CT_ROOTS[size])


@pytest.mark.parametrize(("index", "size", "proof"), [v for v in CT_INCLUSION if v[1] > 1])
def test_inclusion_corruptions_of_reference_vectors_fail(index: int, size: int, proof: list[bytes]) -> None:
    # The probes of transparency-dev/merkle's corruptInclusionProof.
    leaf, good_root = CT_LEAVES[index], CT_ROOTS[size]
    probes: list[tuple[int, int, bytes, list[bytes], bytes]] = [
        (index - 1, size, leaf, proof, good_root),
        (index + 1, size, leaf, proof, good_root),
        (index ^ 2, size, leaf, proof, good_root),
        (index, size * 2, leaf, proof, good_root),
        (index, size // 2, leaf, proof, good_root),
        (index, size, b"WrongLeaf", proof, good_root),
        (index, size, flip(leaf), proof, good_root),
        (index, size, leaf, proof, EMPTY_ROOT),
        (index, size, leaf, proof, SOME_HASH),
        (index, size, leaf, [*proof, b""], good_root),
        (index, size, leaf, [*proof, good_root], good_root),
        (index, size, leaf, [b"", *proof], good_root),
        (index, size, leaf, [good_root, *proof], good_root),
        (index, size, leaf, proof[:-1], good_root),
        (index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], good_root),
    ]
    for i in range(len(proof)):
        tampered = list(proof)
        tampered[i] = flip(proof[i], 3)
        probes.append((index, size, leaf, tampered, good_root))
    for p_index, p_size, p_leaf, p_proof, p_root in probes:
        with pytest.raises(InclusionProofError):
            verify_inclusion(p_index, p_size, p_leaf, p_proof, p_root)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, -1), (1, 1), (2, 1), (-1, 4)])
def test_inclusion_index_out_of_range_fails(index: int, size: int) -> None:
    with pytest.raises(InclusionProofError, match="out of range"):
        verify_inclusion(index, size, SOME_HASH, [], SOME_HASH)


def test_inclusion_single_leaf_tree() -> None:
    leaf = leaf_hash(b"data")
    verify_inclusion(0, 1, leaf, [], leaf)
    with pytest.raises(InclusionProofError, match="bytes"):
        verify_inclusion(0, 1, b"", [], leaf)
    with pytest.raises(InclusionProofError, match="bytes"):
        verify_inclusion(0, 1, leaf, [], b"")
    with pytest.raises(InclusionProofError, match="not the expected"):
        verify_inclusion(0, 1, leaf, [], SOME_HASH)


def test_inclusion_error_messages_are_precise() -> None:
    index, size, proof = CT_INCLUSION[1]
    with pytest.raises(InclusionProofError, match="too long"):
        verify_inclusion(index, size, CT_LEAVES[index], [*proof, SOME_HASH], CT_ROOTS[size])
    with pytest.raises(InclusionProofError, match="too short"):
        verify_inclusion(index, size, CT_LEAVES[index], proof[:-1], CT_ROOTS[size])
    with pytest.raises(InclusionProofError, match=r"leaf 0 in a tree of size 8 leads to root"):
        verify_inclusion(index, size, CT_LEAVES[index], proof, SOME_HASH)
    with pytest.raises(InclusionProofError, match="proof element 1 is 3 bytes"):
        verify_inclusion(index, size, CT_LEAVES[index], [proof[0], b"abc", proof[2]], CT_ROOTS[size])
    assert issubclass(InclusionProofError, VerificationError)


def test_inclusion_proof_generation_rejects_bad_arguments() -> None:
    prover = MerkleProver(CT_LEAVES)
    for index, size in [(8, 8), (-1, 8), (0, 0), (3, 3)]:
        with pytest.raises(ValueError):
            prover.inclusion_proof(index, size)
    with pytest.raises(ValueError):
        prover.inclusion_proof(0, 9)


# --- consistency: vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "expected"), CT_CONSISTENCY)
def test_consistency_proofs_match_reference_vectors(old: int, new: int, expected: list[bytes]) -> None:
    assert MerkleProver(CT_LEAVES).consistency_proof(old, new) == expected
    assert consistency_proof(old, CT_LEAVES[:new]) == expected
    verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], expected)


@pytest.mark.parametrize(("old", "new", "proof"), [v for v in CT_CONSISTENCY if v[2]])
def test_consistency_corruptions_of_reference_vectors_fail(old: int, new: int, proof: list[bytes]) -> None:
    # The probes of transparency-dev/merkle's corruptConsistencyProof.
    r1, r2 = CT_ROOTS[old], CT_ROOTS[new]
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof),
        (old, new, flip(r1), r2, proof),
        (old, new, r1, flip(r2), proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        tampered = list(proof)
        tampered[i] = flip(proof[i], 4)
        probes.append((old, new, r1, r2, tampered))
    for p_old, p_new, p_r1, p_r2, p_proof in probes:
        with pytest.raises(ConsistencyProofError):
            verify_consistency(p_old, p_new, p_r1, p_r2, p_proof)


def test_consistency_trivial_cases() -> None:
    # Same size: empty proof, equal roots.
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(3, 3, CT_ROOTS[3], CT_ROOTS[3], [])
    with pytest.raises(ConsistencyProofError, match="not the expected"):
        verify_consistency(3, 3, CT_ROOTS[3], CT_ROOTS[4], [])
    with pytest.raises(ConsistencyProofError, match="must be empty"):
        verify_consistency(3, 3, CT_ROOTS[3], CT_ROOTS[3], [EMPTY_ROOT])
    # From the empty tree: empty proof, and the old root must be the empty-tree hash.
    verify_consistency(0, 5, EMPTY_ROOT, CT_ROOTS[5], [])
    with pytest.raises(ConsistencyProofError):
        verify_consistency(0, 5, SOME_HASH, CT_ROOTS[5], [])
    with pytest.raises(ConsistencyProofError, match="must be empty"):
        verify_consistency(0, 5, EMPTY_ROOT, CT_ROOTS[5], [EMPTY_ROOT])
    # Time travel, negative sizes, empty proofs for real extensions.
    for old, new in [(1, 0), (2, 1), (-1, 3)]:
        with pytest.raises(ConsistencyProofError, match="out of order"):
            verify_consistency(old, new, CT_ROOTS[1], CT_ROOTS[1], [])
    with pytest.raises(ConsistencyProofError, match="empty"):
        verify_consistency(1, 2, CT_ROOTS[1], CT_ROOTS[2], [])
    assert MerkleProver(CT_LEAVES).consistency_proof(0) == []
    assert MerkleProver(CT_LEAVES).consistency_proof(8) == []
    with pytest.raises(ValueError):
        MerkleProver(CT_LEAVES).consistency_proof(9)
    with pytest.raises(ValueError):
        MerkleProver(CT_LEAVES).consistency_proof(-1)


def test_consistency_error_messages_are_precise() -> None:
    old, new, proof = CT_CONSISTENCY[2]
    with pytest.raises(ConsistencyProofError, match="too long"):
        verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], [*proof, SOME_HASH])
    with pytest.raises(ConsistencyProofError, match="too short"):
        verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], proof[:-1])
    with pytest.raises(ConsistencyProofError, match="leads to old root"):
        verify_consistency(old, new, SOME_HASH, CT_ROOTS[new], proof)
    with pytest.raises(ConsistencyProofError, match="leads to new root"):
        verify_consistency(old, new, CT_ROOTS[old], SOME_HASH, proof)
    with pytest.raises(ConsistencyProofError, match="new root is 4 bytes"):
        verify_consistency(old, new, CT_ROOTS[old], b"abcd", proof)


# --- property tests against the naive reference ------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 300), data=st.data(), seed=st.integers(0, 2**32))
def test_inclusion_proofs_agree_with_naive_and_reject_tampering(
    size: int, data: st.DataObject, seed: int
) -> None:
    leaves = synthetic_leaves(size, seed)
    index = data.draw(st.integers(0, size - 1), label="index")
    good_root = naive_mth(leaves)
    expected = naive_path(index, leaves)
    proof = inclusion_proof(index, leaves)
    assert proof == [digest for digest, _ in expected]
    assert MerkleProver(leaves).root() == good_root == root(leaves)
    assert len(proof) <= math.ceil(math.log2(size)) if size > 1 else proof == []

    verify_inclusion(index, size, leaves[index], proof, good_root)

    with pytest.raises(InclusionProofError):
        verify_inclusion(index, size, flip(leaves[index]), proof, good_root)
    for i in range(len(proof)):
        tampered = list(proof)
        tampered[i] = flip(proof[i], 5)
        with pytest.raises(InclusionProofError):
            verify_inclusion(index, size, leaves[index], tampered, good_root)
    if proof:
        with pytest.raises(InclusionProofError):
            verify_inclusion(index, size, leaves[index], proof[:-1], good_root)
    with pytest.raises(InclusionProofError):
        verify_inclusion(index, size, leaves[index], [*proof, good_root], good_root)
    with pytest.raises(InclusionProofError):
        verify_inclusion(index, size, leaves[index], [SOME_HASH, *proof], good_root)
    if size > 1:
        with pytest.raises(InclusionProofError):
            verify_inclusion(index, size, leaves[index], proof, naive_mth(leaves[:-1]))

    # Another index or tree size accepts the proof exactly when its proof has the same shape
    # (then the verifier computes the same hashes); RFC 9162 binds the size only through the root.
    shape = inclusion_sides(index, size)
    other_index = data.draw(st.integers(0, size), label="other index")
    other_size = data.draw(st.integers(1, 2 * size + 1), label="other size")
    for p_index, p_size in [(other_index, size), (index, other_size), (other_index, other_size)]:
        if (p_index, p_size) == (index, size):
            continue
        same_shape = p_index < p_size and inclusion_sides(p_index, p_size) == shape
        if same_shape:
            verify_inclusion(p_index, p_size, leaves[index], proof, good_root)
        else:
            with pytest.raises(InclusionProofError):
                verify_inclusion(p_index, p_size, leaves[index], proof, good_root)


@settings(max_examples=150, deadline=None)
@given(new=st.integers(1, 300), data=st.data(), seed=st.integers(0, 2**32))
def test_consistency_proofs_agree_with_naive_and_reject_tampering(
    new: int, data: st.DataObject, seed: int
) -> None:
    leaves = synthetic_leaves(new, seed)
    old = data.draw(st.integers(0, new), label="old size")
    old_root, new_root = naive_mth(leaves[:old]), naive_mth(leaves)
    proof = consistency_proof(old, leaves)
    assert proof == (naive_subproof(old, leaves, True) if 0 < old < new else [])
    assert MerkleProver(leaves).consistency_proof(old) == proof
    assert len(proof) <= math.ceil(math.log2(new)) + 1

    verify_consistency(old, new, old_root, new_root, proof)

    if not 0 < old < new:
        return
    for i in range(len(proof)):
        tampered = list(proof)
        tampered[i] = flip(proof[i], 6)
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, new, old_root, new_root, tampered)
    for bad_proof in ([], proof[:-1], [*proof, new_root], [*proof, SOME_HASH], [old_root, *proof]):
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, new, old_root, new_root, bad_proof)
    with pytest.raises(ConsistencyProofError):
        verify_consistency(old, new, new_root, old_root, proof)  # swapped roots
    with pytest.raises(ConsistencyProofError):
        verify_consistency(old, new, flip(old_root), new_root, proof)
    with pytest.raises(ConsistencyProofError):
        verify_consistency(old, new, old_root, flip(new_root), proof)
    with pytest.raises(ConsistencyProofError):
        verify_consistency(old, new, old_root, naive_mth(leaves[:-1]), proof)
    # A tampered leaf anywhere in the new part changes the new root.
    changed = list(leaves)
    changed[data.draw(st.integers(old, new - 1), label="changed leaf")] = SOME_HASH
    with pytest.raises(ConsistencyProofError):
        verify_consistency(old, new, old_root, naive_mth(changed), proof)
    # Other sizes whose proofs have another length reject it: the verifier consumes exactly as
    # many hashes as the sizes call for.
    other_old = data.draw(st.integers(1, new), label="other old size")
    other_new = data.draw(st.integers(other_old, 2 * new), label="other new size")
    if (other_old, other_new) != (old, new):
        other_length = (
            len(naive_subproof(other_old, [b"x"] * other_new, True)) if other_old < other_new else 0
        )
        if other_length != len(proof):
            with pytest.raises(ConsistencyProofError):
                verify_consistency(other_old, other_new, old_root, new_root, proof)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 600), data=st.data())
def test_prover_over_growing_list_matches_fresh_computation(size: int, data: st.DataObject) -> None:
    # One MerkleProver over a list that keeps growing: memoised subtrees stay valid.
    leaves: list[bytes] = []
    prover = MerkleProver(leaves)
    all_leaves = synthetic_leaves(size, 7)
    cut = data.draw(st.integers(0, size), label="cut")
    leaves.extend(all_leaves[:cut])
    if cut:
        index = data.draw(st.integers(0, cut - 1), label="index")
        assert prover.inclusion_proof(index) == inclusion_proof(index, all_leaves[:cut])
    leaves.extend(all_leaves[cut:])
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(0, size), label="old")
    assert prover.root() == root(all_leaves)
    assert prover.inclusion_proof(index) == [d for d, _ in naive_path(index, all_leaves)]
    assert prover.consistency_proof(old) == consistency_proof(old, all_leaves)
    if cut:
        assert prover.root(cut) == root(all_leaves[:cut])


# --- compact range ------------------------------------------------------------------------------


def test_compact_range_peaks_match_reference_compact_trees() -> None:
    accumulator = MerkleAccumulator()
    assert accumulator.peaks == ()
    for size, leaf in enumerate(CT_LEAVES, start=1):
        assert accumulator.append(leaf) == size - 1
        assert list(accumulator.peaks) == CT_COMPACT[size]
        assert accumulator.size == size
        assert accumulator.root() == CT_ROOTS[size]


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 200))
def test_compact_range_root_after_every_append_matches_naive(size: int) -> None:
    leaves = synthetic_leaves(size, 3)
    accumulator = CompactRange()
    for n, leaf in enumerate(leaves, start=1):
        accumulator.append(leaf)
        assert len(accumulator.peaks) == n.bit_count()
        if n % 17 == 0 or n == size:
            assert accumulator.root() == naive_mth(leaves[:n])
    restored = CompactRange.from_peaks(accumulator.size, accumulator.peaks)
    assert restored.root() == accumulator.root() == root(leaves)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 300), data=st.data(), gm=st.booleans())
def test_ranges_folded_as_subtrees_give_the_naive_roots(size: int, data: st.DataObject, gm: bool) -> None:
    """Disjoint ranges hashed on their own (as verification workers do) and folded in order give
    the naive root at every cut, whatever the cuts."""
    h = sm3 if gm else sha256
    leaves = synthetic_leaves(size, 5)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, size), max_size=8))) | {size})
    accumulator = CompactRange(h)
    start = 0
    for cut in cuts:
        nodes = range_subtrees(start, leaves[start:cut], h)
        for level, digest in nodes:
            # each node is a perfect, aligned subtree of the range: its naive root
            assert start <= accumulator.size and accumulator.size % (1 << level) == 0
            assert digest == naive_mth(leaves[accumulator.size : accumulator.size + (1 << level)], h)
            accumulator.append_subtree(level, digest)
        assert accumulator.size == cut
        assert accumulator.root() == naive_mth(leaves[:cut], h)
        start = cut
    leaf_by_leaf = CompactRange(h)
    leaf_by_leaf.extend(leaves)
    assert accumulator.peaks == leaf_by_leaf.peaks


def test_subtrees_must_be_aligned() -> None:
    accumulator = CompactRange()
    accumulator.extend(CT_LEAVES[:3])
    with pytest.raises(ValueError, match="cannot follow a tree of size 3"):
        accumulator.append_subtree(1, CT_LEAVES[3])
    with pytest.raises(ValueError, match="32 bytes"):
        accumulator.append_subtree(0, b"short")
    with pytest.raises(ValueError, match="leaf 0"):
        range_subtrees(-1, CT_LEAVES[:2])
    assert range_subtrees(5, []) == []


def test_compact_range_restore_copy_and_validation() -> None:
    accumulator = CompactRange()
    accumulator.extend(CT_LEAVES[:5])
    copy = accumulator.copy()
    copy.append(CT_LEAVES[5])
    assert accumulator.size == 5 and accumulator.root() == CT_ROOTS[5]
    assert copy.size == 6 and copy.root() == CT_ROOTS[6]
    restored = CompactRange.from_peaks(5, accumulator.peaks)
    restored.extend(CT_LEAVES[5:])
    assert restored.root() == CT_ROOTS[8]
    with pytest.raises(ValueError, match="peaks"):
        CompactRange.from_peaks(6, accumulator.peaks[:1])
    with pytest.raises(ValueError, match="negative"):
        CompactRange.from_peaks(-1, [])
    with pytest.raises(ValueError, match="32 bytes"):
        CompactRange.from_peaks(1, [b"short"])
    with pytest.raises(ValueError, match="32 bytes"):
        accumulator.append(b"short")


# --- the gm suite's hash ------------------------------------------------------------------------


def test_sm3_known_answer_and_sm3_trees() -> None:
    # GB/T 32905-2016 example 1.
    assert sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    leaves = [leaf_hash(entry, sm3) for entry in CT_ENTRIES]
    assert root([], sm3) == sm3(b"")
    for size in range(1, 9):
        assert root(leaves[:size], sm3) == naive_mth(leaves[:size], sm3) != CT_ROOTS[size]
    accumulator = CompactRange(sm3)
    accumulator.extend(leaves)
    assert accumulator.root() == root(leaves, sm3)
    prover = MerkleProver(leaves, sm3)
    for index in range(8):
        proof = prover.inclusion_proof(index)
        verify_inclusion(index, 8, leaves[index], proof, accumulator.root(), sm3)
        with pytest.raises(InclusionProofError):  # SM3 proofs do not verify under SHA-256
            verify_inclusion(index, 8, leaves[index], proof, accumulator.root())
    for old in range(9):
        verify_consistency(
            old, 8, root(leaves[:old], sm3), root(leaves, sm3), prover.consistency_proof(old), sm3
        )


# --- a million leaves ---------------------------------------------------------------------------


def test_million_leaf_tree_proofs_are_short_fast_and_verify() -> None:
    size = 1_000_000
    leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size)]
    accumulator = CompactRange()
    accumulator.extend(leaves)
    tree_root = accumulator.root()
    prover = MerkleProver(leaves)

    started = time.perf_counter()
    proof = prover.inclusion_proof(123_456)  # cold: hashes the whole tree once
    cold = time.perf_counter() - started
    assert len(proof) <= 20 == math.ceil(math.log2(size))
    verify_inclusion(123_456, size, leaves[123_456], proof, tree_root)
    assert prover.root() == tree_root

    started = time.perf_counter()
    for index in (0, 1, 524_287, 524_288, 999_998, 999_999, *range(7, size, 99_991)):
        proof = prover.inclusion_proof(index)
        assert len(proof) <= 20
        verify_inclusion(index, size, leaves[index], proof, tree_root)
    for old in (1, 2, 3, 524_288, 524_289, 777_777, 999_999):
        proof = prover.consistency_proof(old)
        # A consistency proof has at most ceil(log2 n) + 1 hashes (21 for 777,777 -> 1,000,000).
        assert len(proof) <= 21
        verify_consistency(old, size, prover.root(old), tree_root, proof)
    warm = time.perf_counter() - started
    # Generous bounds for slow CI machines; typically about 0.5 s cold and a few ms warm.
    assert cold < 5.0
    assert warm < 1.0
