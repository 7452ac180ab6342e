"""The patch grid shared by datasets and models: which patch side an image size gets when none is given.

Neutral ground: datasets (xaibench/data) and models (xaibench/models) both import it, and it imports neither.
"""
from __future__ import annotations

DEFAULT_PATCH = {28: 4, 64: 8, 128: 16, 224: 16}


def default_patch_size(img_size: int) -> int:
    if img_size in DEFAULT_PATCH:
        return DEFAULT_PATCH[img_size]
    return max(p for p in (4, 8, 16) if img_size % p == 0 and img_size // p >= 4) if img_size % 4 == 0 else 1
