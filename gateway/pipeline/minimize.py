"""Step 7, minimise and mask: only the fields the agreement allows leave the gateway, each
masked as the agreement says. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.pipeline.mask import apply_mask

__all__ = ["minimize"]


def minimize(values: Mapping[str, Any], fields: Sequence[str], masks: Mapping[str, str]) -> dict[str, Any]:
    """``fields`` of ``values`` (and nothing else), masked."""
    return {name: apply_mask(masks.get(name), values.get(name)) for name in fields}
