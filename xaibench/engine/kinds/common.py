"""What the kinds that run a method or read an explanation share: the explained classes, the suited model, and an
Explanation as an explain unit stores it."""
from __future__ import annotations

from typing import Any

import torch

from xaibench.engine.units import NotApplicable
from xaibench.methods import Explanation, unsuited_reason


def explanation_targets(model, x: torch.Tensor, labels: torch.Tensor, target: str, batch_size: int) -> torch.Tensor:
    """The class each image is explained for: its label, or the model's prediction."""
    if target == "label":
        return labels
    with torch.no_grad():  # not inference_mode: the targets take part in the explainers' autograd
        return torch.cat([model.forward_fn(x[start:start + batch_size]).argmax(dim=-1)
                          for start in range(0, len(x), batch_size)])


def merge_explanations(parts: list[Explanation]) -> Explanation:
    """One Explanation for all batches: attributions concatenated, time summed, passes per image averaged."""
    counts = [part.attributions.shape[0] for part in parts]
    total = max(sum(counts), 1)
    forward = sum(part.n_forward * count for part, count in zip(parts, counts))
    backward = sum(part.n_backward * count for part, count in zip(parts, counts))
    return Explanation(method=parts[0].method, attributions=torch.cat([p.attributions.float().cpu() for p in parts]),
                       seconds=sum(part.seconds for part in parts), n_forward=forward / total,
                       n_backward=backward / total)


def explanation_payload(explanation: Explanation, targets: torch.Tensor) -> dict[str, Any]:
    """What an explain unit stores: the Explanation's fields (no pixel map) and the explained classes."""
    return {"method": explanation.method, "attributions": explanation.attributions, "seconds": explanation.seconds,
            "n_forward": float(explanation.n_forward), "n_backward": float(explanation.n_backward),
            "targets": targets.cpu()}


def payload_explanation(payload: dict[str, Any]) -> Explanation:
    """The Explanation an explain unit stored."""
    return Explanation(method=payload["method"], attributions=payload["attributions"], seconds=payload["seconds"],
                       n_forward=payload["n_forward"], n_backward=payload["n_backward"])


def suited_model(deps: dict[str, Any], p: Any):
    """The unit's model, or NotApplicable when its method does not suit the model's family."""
    model = deps["model"].model
    reason = unsuited_reason(p.method, model, p.options)
    if reason:
        raise NotApplicable(reason)
    return model
