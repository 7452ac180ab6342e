"""Before any training: every method is tried once on an untrained network of the planned architecture and
two random images of the planned shape, so that a broken explainer (wrong shape, NaN, Inf, an exception)
stops the run in seconds with one line, not after hours of training. The probe draws from its own seeded
generators and builds the network under a forked RNG: it changes nothing that the run computes."""
from __future__ import annotations

from typing import Any

import torch

from xaibench.errors import XaibenchError

PROBE_IMAGES = 2


def probe_model(options, config: dict[str, Any], overrides: dict[str, Any], info) -> Any | None:
    """An untrained network as the run will train it (None for a --checkpoint classifier or an unbuildable one,
    whose own unit then reports the problem)."""
    from xaibench.engine.options import train_config_for
    from xaibench.training import build_model, model_kwargs_for

    if options.checkpoint:
        return None
    train_config = train_config_for(options.model, config, overrides, info.name)
    if train_config.model.pretrained:
        train_config = train_config.replace(pretrained=None)  # the probe needs the shape, not the weights
    try:
        return build_model(options.model, model_kwargs_for(options.model, info, train_config), seed=0).eval()
    except Exception:  # noqa: BLE001  (the train unit reports it with its own message)
        return None


def probe_methods(options, config: dict[str, Any], overrides: dict[str, Any], info, device: torch.device) -> None:
    """Explain two random images with every method on an untrained network; XaibenchError naming the method on
    any failure or bad output. Methods that do not suit the network's family are left to the run (n/a)."""
    from xaibench.methods import create_method, run_explainer, unsuited_reason

    model = probe_model(options, config, overrides, info)
    if model is None:
        return
    model = model.to(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_IMAGES, info.in_chans, info.size, info.size, generator=generator).to(device)
    targets = torch.arange(PROBE_IMAGES, device=device) % info.n_classes
    for method in options.methods:
        method_options = options.method_options.get(method, {})
        if unsuited_reason(method, model, method_options):
            continue
        try:
            explainer = create_method(method, model, **method_options)
            run_explainer(explainer, x, targets, generator=torch.Generator(device=device).manual_seed(0))
        except Exception as error:  # noqa: BLE001  (any failure of a plugin is reported, in one line)
            first = (str(error).strip().splitlines() or [""])[0]
            raise XaibenchError(f"method {method!r} fails on a probe before any training (an untrained "
                                f"{options.model} and {PROBE_IMAGES} random images): {type(error).__name__}: "
                                f"{first}") from None
