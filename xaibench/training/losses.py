"""Training objectives: cross-entropy for the baselines, L = l1 + l2 + l3 for OFA (SPEC §3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xaibench.models.ofa import OFANet
from xaibench.training.masks import BatchShard, ofa_keep_masks

DETACH_CHOICES = ("masked", "full", "none")
KL_ORDERS = ("paper", "swapped")
L3_TARGETS = ("kl", "wls")


def classification_loss(model, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """l1 only: Segm, ViT and ResNet baselines (for OFANet this is CE of z(N))."""
    loss = F.cross_entropy(model(x).float(), y)
    return {"loss": loss, "l1": loss.detach()}


def ofa_loss(model: OFANet, x: torch.Tensor, y: torch.Tensor, *, n_masks: int, generator: torch.Generator | None,
             uniform_share: float = 0.25, detach: str = "masked", kl_order: str = "paper",
             mask_sizes: str = "shapley", paired: bool = False,
             weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
             shard: BatchShard | None = None, l3_target: str = "kl") -> dict[str, torch.Tensor]:
    """L = l1 + l2 + l3 with one unmasked forward and one batched forward of the B * (1 + M) masked inputs.

    detach="masked": the masked prediction is the target of l3 (the full image's phi learns to predict it);
    "full": the full image's u(S) is the target; "none": gradients flow into both sides.
    kl_order="paper": KL(u_x(S) || u_{x_S}(S)) as Eq. 7 writes it; "swapped": KL(u_{x_S}(S) || u_x(S)).
    shard: x is these rows of a larger global batch (DDP); the masks are those of the global batch's draw.
    l3_target="kl": l3 is the KL of Eq. 7; "wls": the squared error between the additive logits z_x(S) and the
    masked logits z_{x_S}(S) over every class, as ViT-Shapley and KernelSHAP fit the network's own masked
    prediction (with mask_sizes="shapley" the draws follow the Shapley kernel, so the minimiser is the least
    squares fit whose solution is the Shapley values of the logit game).
    """
    batch = x.shape[0]
    n = model.n_patches
    phi_plus, phi_minus = model.shapley(x)
    phi_plus, phi_minus = phi_plus.float(), phi_minus.float()
    l1 = F.cross_entropy(phi_plus.sum(1), y)

    with torch.no_grad():
        phi = (phi_plus - phi_minus).gather(2, y.view(-1, 1, 1).expand(-1, n, 1)).squeeze(2)
    keep_uniform, keep_informed = ofa_keep_masks(phi, n_masks, generator, uniform_share, mask_sizes, paired,
                                                 shard)  # [B, n], [B, M, n]
    keep = torch.cat([keep_uniform[:, None], keep_informed], dim=1)  # [B, 1 + M, n]
    x_masked = x[:, None].expand(-1, 1 + n_masks, *x.shape[1:]).reshape(-1, *x.shape[1:])
    flat_keep = keep.reshape(-1, n)
    masked_plus, masked_minus = model.shapley(x_masked, flat_keep)
    z_masked = OFANet.logits(masked_plus.float(), masked_minus.float(), flat_keep).view(batch, 1 + n_masks, -1)

    l2 = F.cross_entropy(z_masked[:, 0], y)
    z_full = torch.where(keep_informed[..., None], phi_plus[:, None], phi_minus[:, None]).sum(2)  # z_x(S) [B,M,C]
    z_target = z_masked[:, 1:]
    if detach == "masked":
        z_target = z_target.detach()
    elif detach == "full":
        z_full = z_full.detach()
    if l3_target == "wls":  # the masked logits fitted by least squares (over classes, images and masks)
        l3 = (z_full - z_target).square().mean()
    else:  # KL(u_x(S) || u_{x_S}(S)), the paper's Eq. 7, averaged over images and masks
        log_p = z_full.log_softmax(-1)
        log_q = z_target.log_softmax(-1)
        if kl_order == "swapped":
            log_p, log_q = log_q, log_p
        l3 = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    total = weights[0] * l1 + weights[1] * l2 + weights[2] * l3
    return {"loss": total, "l1": l1.detach(), "l2": l2.detach(), "l3": l3.detach()}
