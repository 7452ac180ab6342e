"""Which torch device a run uses: `resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps")`, one clear error for
a device that is not there. Imported by the engine and the command line alike."""
from __future__ import annotations

import torch

from xaibench.errors import XaibenchError


def resolve_device(name: str | None) -> torch.device:
    """auto: CUDA, else Apple's MPS where torch offers it (untested: no such machine here), else the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise XaibenchError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XaibenchError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise XaibenchError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) "
                            f"are visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not _mps_available():
        raise XaibenchError(f"device {name!r} asked for, but torch offers no MPS here; use --device cpu")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
