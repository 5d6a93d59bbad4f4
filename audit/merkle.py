"""RFC 9162 section 2.1 Merkle trees: hashing, inclusion and consistency proofs, and their verification.

Definitions (RFC 9162 2.1.1), for a hash function H and a list of n entries D[n]:

* MTH({}) = H(""), the hash of the empty string;
* MTH({d0}) = leaf hash = H(0x00 || d0);
* MTH(D[n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n])) for n > 1, where k is the largest power of two
  smaller than n.

Every function works on *leaf hashes* (already H(0x00 || entry)), takes a ``hash_fn`` defaulting to
SHA-256 (pass :func:`audit.suites.sm3` for the ``gm`` suite), and does no I/O.

* :func:`root`, :func:`inclusion_proof`, :func:`consistency_proof`: one-shot, O(n) hashing.
* :class:`MerkleProver`: proofs and roots for any tree size over an append-only leaf-hash sequence,
  memoising the hashes of power-of-two aligned subtrees; after the first proof (about n hash
  operations), every proof costs O(log^2 n) hash operations at most.
* :class:`CompactRange` (alias :data:`MerkleAccumulator`): append leaf hashes while keeping only the
  O(log n) roots of the perfect subtrees; the current root in O(log n).
* :func:`verify_inclusion`, :func:`verify_consistency`: the RFC 9162 2.1.3.2 and 2.1.4.2 algorithms
  verbatim; they return ``None`` or raise :class:`~audit.errors.InclusionProofError` /
  :class:`~audit.errors.ConsistencyProofError`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence

from audit.errors import ConsistencyProofError, InclusionProofError
from audit.suites import HashFn, sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

# Complete subtrees of at least 2**_CACHE_LEVEL leaves are memoised by MerkleProver; smaller ones are
# recomputed from the leaf hashes (at most 2**_CACHE_LEVEL - 1 hash operations each).
_CACHE_LEVEL = 8
TILE_LEVEL = _CACHE_LEVEL
"""Tiles are the complete subtrees of 2**TILE_LEVEL = 256 leaves (as Tessera's tiles): the index
stores their hashes (:mod:`audit.index`) and :class:`MerkleProver` takes them."""
TILE_WIDTH = 1 << TILE_LEVEL


def empty_root(hash_fn: HashFn = sha256) -> bytes:
    """MTH({}) = H(""): the root of the empty tree."""
    return hash_fn(b"")


def leaf_hash(data: bytes, hash_fn: HashFn = sha256) -> bytes:
    """MTH({d}) = H(0x00 || d)."""
    return hash_fn(LEAF_PREFIX + data)


def node_hash(left: bytes, right: bytes, hash_fn: HashFn = sha256) -> bytes:
    """H(0x01 || left || right): the hash of an interior node."""
    return hash_fn(NODE_PREFIX + left + right)


def split_point(n: int) -> int:
    """k, the largest power of two smaller than n (n >= 2): where MTH splits D[n]."""
    if n < 2:
        raise ValueError(f"a tree of size {n} has no split point")
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes], hash_fn: HashFn = sha256) -> bytes:
    """MTH of the tree whose leaf hashes are ``leaf_hashes`` (O(n) hash operations).

    Computed level by level, carrying an unpaired last node up unchanged: this gives exactly the
    largest-power-of-two split of RFC 9162, without recursion.
    """
    level = list(leaf_hashes)
    if not level:
        return hash_fn(b"")
    while len(level) > 1:
        paired = [hash_fn(NODE_PREFIX + a + b) for a, b in zip(level[0::2], level[1::2], strict=False)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes], hash_fn: HashFn = sha256) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 2.1.3.1 for the tree of all ``leaf_hashes``; leaf side first."""
    return MerkleProver(leaf_hashes, hash_fn).inclusion_proof(index)


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes], hash_fn: HashFn = sha256) -> list[bytes]:
    """PROOF(old_size, D[n]) of RFC 9162 2.1.4.1 (SUBPROOF with b = true) from the tree of ``old_size``
    leaves to the tree of all ``leaf_hashes``. Empty when ``old_size`` is 0 or n."""
    return MerkleProver(leaf_hashes, hash_fn).consistency_proof(old_size)


class MerkleProver:
    """Roots and proofs for every tree size over one append-only sequence of leaf hashes.

    The sequence is read, never copied, so a list the caller keeps appending to is fine. It must only
    ever grow: the hashes of complete, power-of-two aligned subtrees are memoised (those of at least
    256 leaves), and they are only valid while the leaves under them stay the same.
    """

    def __init__(
        self,
        leaf_hashes: Sequence[bytes],
        hash_fn: HashFn = sha256,
        *,
        tiles: Mapping[int, bytes] | None = None,
    ) -> None:
        """``tiles``: known hashes of complete 256-leaf tiles (tile ``n`` covers leaves
        ``[256 n, 256 n + 256)``, see :data:`TILE_LEVEL`), e.g. from the log's index. With every
        tile of the tree known, a root or proof hashes only tiles and reads only the leaves of the
        (at most two) tiles it descends into: ``leaf_hashes`` may then be a lazy sequence."""
        self._leaves = leaf_hashes
        self._hash_fn = hash_fn
        self._cache: dict[tuple[int, int], bytes] = {}
        if tiles:
            full = len(leaf_hashes) >> TILE_LEVEL
            for number, digest in tiles.items():
                if 0 <= number < full:
                    self._cache[(TILE_LEVEL, number)] = digest

    @property
    def size(self) -> int:
        """The number of leaf hashes available now."""
        return len(self._leaves)

    def root(self, tree_size: int | None = None) -> bytes:
        """MTH of the first ``tree_size`` leaves (default: all)."""
        n = self._tree_size(tree_size)
        if n == 0:
            return self._hash_fn(b"")
        return self._mth(0, n)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]). Fast when ``start`` is a multiple of a power of two >= end - start, as for
        every subtree in RFC 9162's recursion; correct (but not memoised) for any non-empty range."""
        if not 0 <= start < end <= len(self._leaves):
            raise ValueError(f"leaf range [{start}, {end}) is empty or not within 0..{len(self._leaves)}")
        return self._mth(start, end)

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """PATH(index, D[tree_size]) of RFC 9162 2.1.3.1, ordered from the leaf's sibling to the root's
        child; ``tree_size`` defaults to all leaves."""
        n = self._tree_size(tree_size)
        if not 0 <= index < n:
            raise ValueError(f"leaf index {index} is not in a tree of size {n}")
        proof: list[bytes] = []
        self._path(index, 0, n, proof)
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 9162 2.1.4.1; empty if old_size is 0 or new_size."""
        n = self._tree_size(new_size)
        if not 0 <= old_size <= n:
            raise ValueError(f"old tree size {old_size} is not within 0..{n}")
        proof: list[bytes] = []
        if 0 < old_size < n:
            self._subproof(old_size, 0, n, True, proof)
        return proof

    # -- RFC 9162 recursions, on ranges [start, end) of the leaves --------------------------------

    def _path(self, m: int, start: int, end: int, out: list[bytes]) -> None:
        # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      if m < k
        #               = PATH(m - k, D[k:n]) : MTH(D[0:k])  if m >= k
        n = end - start
        if n == 1:
            return
        k = split_point(n)
        if m < k:
            self._path(m, start, start + k, out)
            out.append(self._mth(start + k, end))
        else:
            self._path(m - k, start + k, end, out)
            out.append(self._mth(start, start + k))

    def _subproof(self, m: int, start: int, end: int, complete: bool, out: list[bytes]) -> None:
        # SUBPROOF(m, D[m], true) = {};  SUBPROOF(m, D[m], false) = {MTH(D[m])}
        # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          if m <= k
        #                      = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  if m > k
        n = end - start
        if m == n:
            if not complete:
                out.append(self._mth(start, end))
            return
        k = split_point(n)
        if m <= k:
            self._subproof(m, start, start + k, complete, out)
            out.append(self._mth(start + k, end))
        else:
            self._subproof(m - k, start + k, end, False, out)
            out.append(self._mth(start, start + k))

    # -- subtree hashes ---------------------------------------------------------------------------

    def _mth(self, start: int, end: int) -> bytes:
        size = end - start
        if size & (size - 1) == 0 and start % size == 0:
            level = size.bit_length() - 1
            return self._perfect(level, start >> level)
        k = split_point(size)
        return self._hash_fn(NODE_PREFIX + self._mth(start, start + k) + self._mth(start + k, end))

    def _perfect(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree of 2**level leaves starting at leaf index << level."""
        if level == 0:
            return self._leaves[index]
        if level < _CACHE_LEVEL:
            return self._fold(index << level, (index + 1) << level)
        key = (level, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if level == _CACHE_LEVEL:
            digest = self._fold(index << level, (index + 1) << level)
        else:
            left = self._perfect(level - 1, 2 * index)
            right = self._perfect(level - 1, 2 * index + 1)
            digest = self._hash_fn(NODE_PREFIX + left + right)
        self._cache[key] = digest
        return digest

    def _fold(self, start: int, end: int) -> bytes:
        """The hash of a complete subtree (end - start a power of two), level by level."""
        hash_fn = self._hash_fn
        level = self._leaves[start:end]
        while len(level) > 1:
            level = [hash_fn(NODE_PREFIX + a + b) for a, b in zip(level[0::2], level[1::2], strict=True)]
        return level[0]

    def _tree_size(self, tree_size: int | None) -> int:
        available = len(self._leaves)
        if tree_size is None:
            return available
        if not 0 <= tree_size <= available:
            raise ValueError(f"tree size {tree_size} is not within 0..{available} (leaf hashes available)")
        return tree_size


class CompactRange:
    """An append-only Merkle accumulator: the compact range [0, size) of Trillian/transparency-dev.

    It keeps only the roots of the perfect subtrees that the binary representation of ``size``
    decomposes the tree into ("peaks", largest and leftmost first, one per set bit of ``size``), so
    memory is O(log n), an append costs amortised O(1) and at most O(log n) hash operations, and
    :meth:`root` folds the peaks from the right in O(log n). The state (``size``, ``peaks``) can be
    persisted and restored with :meth:`from_peaks`.
    """

    __slots__ = ("_digest_size", "_hash_fn", "_peaks", "_size")

    def __init__(self, hash_fn: HashFn = sha256) -> None:
        self._hash_fn = hash_fn
        self._digest_size = len(hash_fn(b""))
        self._size = 0
        self._peaks: list[bytes] = []

    @classmethod
    def from_peaks(cls, size: int, peaks: Sequence[bytes], hash_fn: HashFn = sha256) -> CompactRange:
        """Restore a range of ``size`` leaves from its peaks (as given by :attr:`peaks`)."""
        accumulator = cls(hash_fn)
        if size < 0:
            raise ValueError(f"tree size must not be negative, got {size}")
        if len(peaks) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} peaks, got {len(peaks)}")
        for peak in peaks:
            accumulator._check(peak, "peak")
        accumulator._size = size
        accumulator._peaks = list(peaks)
        return accumulator

    @property
    def size(self) -> int:
        """The number of leaves appended."""
        return self._size

    @property
    def peaks(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots, leftmost (largest) first."""
        return tuple(self._peaks)

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash; returns its leaf index."""
        self._check(leaf_hash, "leaf hash")
        index = self._size
        digest = leaf_hash
        carry = index
        while carry & 1:
            digest = self._hash_fn(NODE_PREFIX + self._peaks.pop() + digest)
            carry >>= 1
        self._peaks.append(digest)
        self._size = index + 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append each leaf hash in order."""
        for leaf in leaf_hashes:
            self.append(leaf)

    def append_subtree(self, level: int, digest: bytes) -> None:
        """Append the root of a perfect subtree of ``2**level`` leaves (as :func:`range_subtrees`
        gives); the size must be a multiple of ``2**level``."""
        self._check(digest, "subtree hash")
        if level < 0 or self._size & ((1 << level) - 1):
            raise ValueError(f"a subtree of 2**{level} leaves cannot follow a tree of size {self._size}")
        carry = self._size >> level
        while carry & 1:
            digest = self._hash_fn(NODE_PREFIX + self._peaks.pop() + digest)
            carry >>= 1
        self._peaks.append(digest)
        self._size += 1 << level

    def root(self) -> bytes:
        """MTH of the leaves appended so far: H("") when empty."""
        if not self._peaks:
            return self._hash_fn(b"")
        digest = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            digest = self._hash_fn(NODE_PREFIX + peak + digest)
        return digest

    def copy(self) -> CompactRange:
        """An independent copy with the same state."""
        return CompactRange.from_peaks(self._size, self._peaks, self._hash_fn)

    def _check(self, digest: bytes, what: str) -> None:
        if len(digest) != self._digest_size:
            raise ValueError(f"{what} must be {self._digest_size} bytes, got {len(digest)}")


MerkleAccumulator = CompactRange


def range_subtrees(
    start: int, leaf_hashes: Sequence[bytes], hash_fn: HashFn = sha256
) -> list[tuple[int, bytes]]:
    """The perfect subtrees that the leaves ``[start, start + len(leaf_hashes))`` fold into on
    their own, left to right, as (level, root) pairs: a tree of size ``start`` extended with them
    by :meth:`CompactRange.append_subtree` equals it extended leaf by leaf. Lets several
    processes hash disjoint ranges of a log and one fold the results in O(log n) per range."""
    if start < 0:
        raise ValueError(f"a range must not start before leaf 0, got {start}")
    nodes: list[tuple[int, bytes]] = []
    pop, push = nodes.pop, nodes.append
    node = NODE_PREFIX
    index = start
    for leaf in leaf_hashes:
        digest, level, block = leaf, 0, index
        # merge with the left sibling while this node is a right child whose sibling is in range
        while block & 1 and (block - 1) << level >= start:
            digest = hash_fn(node + pop()[1] + digest)
            block >>= 1
            level += 1
        push((level, digest))
        index += 1
    return nodes


# --- verification -----------------------------------------------------------------------------


def _short(digest: bytes) -> str:
    return digest[:8].hex() + ("…" if len(digest) > 8 else "")


def _check_lengths(
    error: type[InclusionProofError] | type[ConsistencyProofError],
    digest_size: int,
    named: Sequence[tuple[str, bytes]],
    proof: Sequence[bytes],
) -> None:
    for what, digest in named:
        if len(digest) != digest_size:
            raise error(f"{what} is {len(digest)} bytes, expected {digest_size}")
    for i, element in enumerate(proof):
        if len(element) != digest_size:
            raise error(f"proof element {i} is {len(element)} bytes, expected {digest_size}")


def verify_inclusion(
    index: int,
    tree_size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    root: bytes,
    hash_fn: HashFn = sha256,
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` leaves with ``root``.

    RFC 9162 2.1.3.2, step by step. Returns ``None``; raises :class:`InclusionProofError` saying
    which check failed.
    """
    where = f"leaf {index} in a tree of size {tree_size}"
    if tree_size <= 0 or not 0 <= index < tree_size:
        raise InclusionProofError(f"no inclusion proof exists for {where}: index out of range")
    _check_lengths(InclusionProofError, len(hash_fn(b"")), [("leaf hash", leaf_hash), ("root", root)], proof)

    fn = index
    sn = tree_size - 1
    r = leaf_hash
    for used, p in enumerate(proof):
        if sn == 0:
            raise InclusionProofError(
                f"inclusion proof for {where} is too long: {len(proof)} hashes, the path ends after {used}"
            )
        if fn & 1 or fn == sn:
            r = hash_fn(NODE_PREFIX + p + r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_fn(NODE_PREFIX + r + p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError(f"inclusion proof for {where} is too short: {len(proof)} hashes")
    if not hmac.compare_digest(r, root):
        raise InclusionProofError(
            f"inclusion proof for {where} leads to root {_short(r)}, not the expected {_short(root)}"
        )


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
    hash_fn: HashFn = sha256,
) -> None:
    """Check that the tree of ``new_size`` leaves with ``new_root`` extends the tree of ``old_size``
    leaves with ``old_root``.

    RFC 9162 2.1.4.2 step by step for 0 < old_size < new_size. For old_size == new_size the proof
    must be empty and the roots equal; for old_size == 0 the proof must be empty and ``old_root``
    must be the empty-tree hash. Returns ``None``; raises :class:`ConsistencyProofError`.
    """
    where = f"tree size {old_size} to {new_size}"
    if old_size < 0 or new_size < old_size:
        raise ConsistencyProofError(f"no consistency proof exists from {where}: sizes out of order")
    _check_lengths(
        ConsistencyProofError, len(hash_fn(b"")), [("old root", old_root), ("new root", new_root)], proof
    )
    if old_size == new_size or old_size == 0:
        if proof:
            raise ConsistencyProofError(f"consistency proof from {where} must be empty, has {len(proof)}")
        expected_old = new_root if old_size == new_size else hash_fn(b"")
        if not hmac.compare_digest(old_root, expected_old):
            raise ConsistencyProofError(
                f"old root {_short(old_root)} for {where} is not the expected {_short(expected_old)}"
            )
        return

    # 1. An empty path fails.
    if not proof:
        raise ConsistencyProofError(f"consistency proof from {where} is empty")
    # 2. If first is an exact power of 2, prepend first_hash to the path.
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3. fn = first - 1, sn = second - 1.
    fn = old_size - 1
    sn = new_size - 1
    # 4. If LSB(fn) is set, right-shift both until it is not.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value of the path.
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for used, c in enumerate(path[1:], start=1):
        if sn == 0:
            raise ConsistencyProofError(
                f"consistency proof from {where} is too long: "
                f"the path ends after {used} of {len(path)} hashes"
            )
        if fn & 1 or fn == sn:
            fr = hash_fn(NODE_PREFIX + c + fr)
            sr = hash_fn(NODE_PREFIX + c + sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_fn(NODE_PREFIX + sr + c)
        fn >>= 1
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash, sn == 0.
    if sn != 0:
        raise ConsistencyProofError(f"consistency proof from {where} is too short: {len(proof)} hashes")
    if not hmac.compare_digest(fr, old_root):
        raise ConsistencyProofError(
            f"consistency proof from {where} leads to old root {_short(fr)}, not {_short(old_root)}"
        )
    if not hmac.compare_digest(sr, new_root):
        raise ConsistencyProofError(
            f"consistency proof from {where} leads to new root {_short(sr)}, not {_short(new_root)}"
        )
