"""Small vectorised sampling helpers shared by the generator's components."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
Bools = NDArray[np.bool_]

#: The generator's random streams, in spawn order. Append only: each name's position fixes its
#: stream, so adding a component never changes what the others draw.
STREAMS: tuple[str, ...] = (
    "population",
    "households",
    "disability",
    "education",
    "employers",
    "employment",
    "registrations",
    "categories",
    "hrss",
    "education_rows",
    "civil_affairs",
    "tax",
    "market_regulation",
    "truth",
)


def streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per component, all derived from ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {
        name: np.random.Generator(np.random.PCG64(ss)) for name, ss in zip(STREAMS, children, strict=True)
    }


def choice(rng: np.random.Generator, weights: Sequence[float] | F64, size: int) -> I64:
    """Indices drawn with replacement, proportional to ``weights``."""
    w = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    out: I64 = np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)
    return np.minimum(out, len(w) - 1)


def weighted_sample(rng: np.random.Generator, weights: F64, k: int) -> I64:
    """``k`` distinct indices drawn without replacement proportional to ``weights`` (Efraimidis-
    Spirakis keys), in decreasing key order, i.e. a weighted random order. Zero weights are never
    drawn; fewer than ``k`` come back if fewer have weight."""
    n = len(weights)
    positive = weights > 0
    keys = np.full(n, -np.inf)
    u = rng.random(n)
    keys[positive] = np.log(u[positive]) / weights[positive]
    k = int(min(k, int(positive.sum())))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-keys, k - 1)[:k]
    out: I64 = top[np.argsort(-keys[top], kind="stable")].astype(np.int64)
    return out


def rank_within(keys: I64) -> I64:
    """For each element, how many earlier elements (in array order) share its key."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = sk[1:] != sk[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n) - first
    return ranks


def zfill(values: I64, width: int) -> NDArray[np.str_]:
    """Non-negative integers as zero-padded decimal strings of ``width`` characters."""
    out: NDArray[np.str_] = (
        np.strings.zfill(values.astype(f"U{width}"), width) if len(values) else np.zeros(0, f"U{width}")
    )
    return out
