"""Image sizes as config gives them."""

from __future__ import annotations

from collections.abc import Sequence


def pair(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``(H, W)`` from one side or a pair (Hydra gives ints and ListConfigs); None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    h, w = (int(v) for v in value)
    return (h, w)
