"""Amortized Shapley explainers trained in-tree on the explained network: ViT-Shapley and FastSHAP.

No maintained library drives timm's ViT for these (FastSHAP's code is TensorFlow or research scripts,
ViT-Shapley's a Lightning research repository on its own ViT), so both are written here, on one objective:

- The game: v(S) = the target class's log-odds log p - log(1 - p) (p clamped to [1e-6, 1 - 1e-6]) under the
  patch keep-mask S, from the surrogate's masked forward. Log-odds rather than the probability: the
  probability saturates at 0 or 1 on most subsets of an easy image (tiny, noisy regression targets), the
  log-odds stays informative and is the scale OFA's phi lives on (its logits are sums of phi), so the
  three amortized explainers are compared on one scale. `value="prob"` uses the probability instead.
- The surrogate: the explained model itself when it was trained under random masking (an OFA network:
  `surrogate="auto"` takes any OFANet, i.e. ofa and segm), else a copy of it fine-tuned under random masking
  (subset sizes uniform in 0..n, then a uniform subset) to match the model's unmasked class probabilities
  (KL divergence), `surrogate_steps` AdamW steps; `surrogate="model"` / `"finetune"` force either.
- The objective (FastSHAP's, which ViT-Shapley keeps): per image, `n_subsets` subsets S drawn from the
  Shapley kernel (size k in 1..n-1 with probability proportional to 1/(k (n - k)), then a uniform subset of
  that size), paired (every second S is the complement of the one before), and the least squares
  (v(S) - v(none) - sum_{i in S} phi_i)^2 averaged over subsets, images and classes: sampling from the kernel
  is the kernel weighting. Efficiency is enforced by the additive normalisation phi_i += (v(all) - v(none) -
  sum_j phi_j) / n, per image and class, in training and at explain time.
- Explaining: one forward pass of the explainer, plus the surrogate's v(all) and v(none) for the
  normalisation (two forward passes per image, counted).
"""
from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.registry import register_method
from xaibench.sampling import uniform

from .base import FittedExplainer

VALUES = ("logodds", "prob")
SURROGATES = ("auto", "model", "finetune")
EPS = 1e-6


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def game_value(probabilities: torch.Tensor, value: str) -> torch.Tensor:
    """v per class [..., C] from class probabilities: the log-odds (clamped) or the probability itself."""
    if value == "prob":
        return probabilities.float()
    p = probabilities.float().clamp(EPS, 1.0 - EPS)
    return torch.log(p) - torch.log1p(-p)


def shapley_kernel_masks(b: int, m: int, n: int, generator: torch.Generator | None,
                         device: torch.device) -> torch.Tensor:
    """Keep-masks bool [b, m, n] drawn from the Shapley kernel, paired: row 2j+1 is the complement of row 2j."""
    half = (m + 1) // 2
    k = torch.arange(1, n, dtype=torch.float64)
    weights = 1.0 / (k * (n - k))
    source = generator.device if generator is not None else device
    sizes = torch.multinomial(weights.to(source), b * half, replacement=True, generator=generator) + 1
    sizes = sizes.to(device).view(b, half, 1)
    ranks = uniform((b, half, n), generator, device).argsort(dim=-1).argsort(dim=-1)
    masks = ranks < sizes
    paired = torch.stack([masks, ~masks], dim=2).reshape(b, 2 * half, n)
    return paired[:, :m]


def uniform_masks(b: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Keep-masks bool [b, n]: a size uniform in 0..n, then a uniform subset of it (the surrogate's masking)."""
    sizes = (uniform((b, 1), generator, device) * (n + 1)).floor().clamp(max=n)
    ranks = uniform((b, n), generator, device).argsort(dim=-1).argsort(dim=-1)
    return ranks < sizes


def _check_options(method: str, options: dict[str, Any], own: str) -> None:
    """A one-line XaibenchError for an option neither the method nor AmortizedShapley takes."""
    valid = [name for name in inspect.signature(AmortizedShapley.__init__).parameters if name not in ("self", "model")]
    for option in options:
        if option not in valid:
            raise XaibenchError(f"method {method!r} has no option {option!r}; valid options: "
                                f"{', '.join([own, *valid])}")


def normalise(phi: torch.Tensor, v_all: torch.Tensor, v_none: torch.Tensor) -> torch.Tensor:
    """Additive efficiency normalisation: phi [B, n, C] shifted so that its sum over patches is v_all - v_none."""
    gap = v_all - v_none - phi.sum(dim=1)
    return phi + gap[:, None, :] / phi.shape[1]


class AmortizedShapley(FittedExplainer):
    """Shared fit/explain of the amortized Shapley explainers; a subclass builds `net` (image -> phi [B, n, C])."""

    needs_gradients = False

    def __init__(self, model: nn.Module, steps: int = 300, batch_size: int = 8, n_subsets: int = 4,
                 lr: float = 1e-3, value: str = "logodds", surrogate: str = "auto", surrogate_steps: int = 100,
                 surrogate_lr: float = 1e-4, chunk: int = 512):
        super().__init__(model)
        for name, number in (("steps", steps), ("batch_size", batch_size), ("n_subsets", n_subsets),
                             ("chunk", chunk)):
            if not isinstance(number, int) or number < 1:
                raise XaibenchError(f"method {self.name!r}: {name} must be a positive integer, got {number!r}")
        if not isinstance(surrogate_steps, int) or surrogate_steps < 0:
            raise XaibenchError(f"method {self.name!r}: surrogate_steps must be an integer >= 0, "
                                f"got {surrogate_steps!r}")
        if value not in VALUES:
            raise XaibenchError(f"method {self.name!r}: value must be one of {', '.join(VALUES)}, got {value!r}")
        if surrogate not in SURROGATES:
            raise XaibenchError(f"method {self.name!r}: surrogate must be one of {', '.join(SURROGATES)}, "
                                f"got {surrogate!r}")
        if not (lr > 0 and surrogate_lr > 0):
            raise XaibenchError(f"method {self.name!r}: lr and surrogate_lr must be > 0, got {lr!r}, {surrogate_lr!r}")
        self.steps, self.batch_size, self.n_subsets, self.lr, self.chunk = steps, batch_size, n_subsets, lr, chunk
        self.value, self.surrogate_mode = value, surrogate
        self.surrogate_steps, self.surrogate_lr = surrogate_steps, surrogate_lr
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.surrogate: nn.Module = model  # the game's network; a fine-tuned copy after fit/load_fitted if needed
        self.net = self._initial_net(0)

    # -- to be built by a subclass ----------------------------------------------------------------------------
    def build_net(self) -> nn.Module:
        raise NotImplementedError

    def raw_phi(self, inputs: torch.Tensor) -> torch.Tensor:
        """Unnormalised phi [B, n, C] from one forward pass of the explainer."""
        return self.net(inputs)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.net.parameters()), "lr": self.lr}]

    # -- the game -------------------------------------------------------------------------------------------
    def _initial_net(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            return self.build_net().to(self.device)

    def uses_model_as_surrogate(self) -> bool:
        if self.surrogate_mode == "auto":
            # a network whose masked forward was trained (OFA's objective sets trained_masked; Segm's does not)
            return getattr(self.model, "trained_masked", hasattr(self.model, "shapley"))
        return self.surrogate_mode == "model"

    @torch.no_grad()
    def values(self, inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """v(S) [B, m, C] of the surrogate for keep-masks [B, m, n], `chunk` rows per call."""
        b, m, n = masks.shape
        rows = masks.reshape(b * m, n)
        image = torch.arange(b, device=inputs.device).repeat_interleave(m)
        out = []
        for start in range(0, rows.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            out.append(game_value(self.surrogate.forward_fn(inputs[image[part]], rows[part]), self.value))
        if self.surrogate is not self.model:  # a fine-tuned copy: its passes are the method's too
            self.extra_forward_rows += rows.shape[0]
        return torch.cat(out).reshape(b, m, -1)

    def phi(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised phi [B, n, C]: the explainer's output shifted to efficiency with v(all) and v(none)."""
        b, n = inputs.shape[0], self.model.n_patches
        ends = torch.zeros(b, 2, n, dtype=torch.bool, device=inputs.device)
        ends[:, 0] = True
        v = self.values(inputs, ends)
        return normalise(self.raw_phi(inputs), v[:, 0], v[:, 1])

    # -- fitting ----------------------------------------------------------------------------------------------
    def _draw(self, train, generator: torch.Generator) -> torch.Tensor:
        indices = torch.randint(len(train), (self.batch_size,), generator=generator, device=generator.device)
        return train.batch(indices.cpu(), device=self.device)[0]

    def fit_surrogate(self, train, generator: torch.Generator) -> None:
        """A copy of the model fine-tuned under random masking to match its unmasked class probabilities."""
        surrogate = copy.deepcopy(self.model).train()
        for parameter in surrogate.parameters():
            parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW(surrogate.parameters(), lr=self.surrogate_lr, weight_decay=0.0)
        for _ in range(self.surrogate_steps):
            x = self._draw(train, generator)
            with torch.no_grad():
                target = self.model.forward_fn(x)
            keep = uniform_masks(x.shape[0], self.model.n_patches, generator, self.device)
            log_p = F.log_softmax(surrogate(x, keep).float(), dim=-1)
            loss = F.kl_div(log_p, target, reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.surrogate = surrogate.eval().requires_grad_(False)

    def fit(self, train, generator: torch.Generator, progress: bool = False) -> dict[str, torch.Tensor]:
        """Fine-tune a surrogate if needed, then train the explainer `steps` steps on the WLS objective."""
        self.model.eval()
        if self.uses_model_as_surrogate() or self.surrogate_steps == 0:
            self.surrogate = self.model
        else:
            self.fit_surrogate(train, generator)
        self.net = self._initial_net(_seed_from(generator)).train()
        optimizer = torch.optim.AdamW(self.param_groups(), weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.steps)
        n = self.model.n_patches
        for _ in range(self.steps):
            x = self._draw(train, generator)
            masks = shapley_kernel_masks(x.shape[0], self.n_subsets, n, generator, self.device)
            ends = torch.zeros(x.shape[0], 2, n, dtype=torch.bool, device=self.device)
            ends[:, 0] = True
            v = self.values(x, torch.cat([ends, masks], dim=1))  # [B, 2 + m, C]
            with torch.enable_grad():
                phi = normalise(self.raw_phi(x), v[:, 0], v[:, 1])
                predicted = torch.einsum("bmn,bnc->bmc", masks.float(), phi)
                loss = (predicted - (v[:, 2:] - v[:, 1:2])).pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            schedule.step()
        self.net.eval()
        return self.state()

    # -- state ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        state = {f"net.{k}": v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        if self.surrogate is not self.model:
            state.update({f"surrogate.{k}": v.detach().cpu().clone()
                          for k, v in self.surrogate.state_dict().items()})
        return state

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        net = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        surrogate = {k[len("surrogate."):]: v for k, v in state.items() if k.startswith("surrogate.")}
        self.net.load_state_dict(net)
        self.net.to(self.device).eval()
        self.surrogate = self.model
        if surrogate:
            self.surrogate = copy.deepcopy(self.model)
            self.surrogate.load_state_dict(surrogate)
            self.surrogate.to(self.device).eval().requires_grad_(False)

    # -- explaining: passes through a fine-tuned surrogate copy count as `extra_forward_rows` ----------------------
    def attribute(self, inputs, target, generator=None):
        phi = self.phi(inputs)
        return phi.gather(2, target.view(-1, 1, 1).expand(-1, phi.shape[1], 1)).squeeze(2)


class TokenHead(nn.Module):
    """ViT-Shapley's explainer head: `depth` transformer blocks over the encoder's output tokens, then a linear
    map of each patch token to one value per class."""

    def __init__(self, dim: int, heads: int, prefix: int, num_classes: int, depth: int):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.prefix = prefix
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=2.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.blocks(tokens))[:, self.prefix:])


class EncoderExplainer(nn.Module):
    """A copy of the model's encoder (trained) with a TokenHead on its output tokens."""

    def __init__(self, encoder: nn.Module, head: TokenHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.tokens(x))


@register_method("vit_shapley")
class ViTShapleyExplainer(AmortizedShapley):
    """ViT-Shapley (Covert et al. 2023): a copy of the model's ViT encoder with a transformer head, trained with
    the Shapley-kernel WLS on the (surrogate) model's log-odds; efficiency by additive normalisation."""

    families = ("vit",)
    requires = ("encoder.tokens", "encoder.num_prefix_tokens", "encoder.embed_dim")
    requirement = "a ViT-based model (ofa, segm, vit) with a maskable encoder"

    def __init__(self, model: nn.Module, head_depth: int = 1, tune_encoder: bool = True, encoder_lr: float = 1e-4,
                 **options: Any):
        _check_options("vit_shapley", options, "head_depth, tune_encoder, encoder_lr")
        if not isinstance(head_depth, int) or head_depth < 0:
            raise XaibenchError(f"method 'vit_shapley': head_depth must be an integer >= 0, got {head_depth!r}")
        if not isinstance(tune_encoder, bool) or not encoder_lr > 0:
            raise XaibenchError(f"method 'vit_shapley': tune_encoder must be true or false and encoder_lr > 0, "
                                f"got {tune_encoder!r}, {encoder_lr!r}")
        self.head_depth, self.tune_encoder, self.encoder_lr = head_depth, tune_encoder, encoder_lr
        super().__init__(model, **options)

    def build_net(self) -> nn.Module:
        encoder = self.model.encoder
        head = TokenHead(encoder.embed_dim, encoder.blocks[0].attn.num_heads, encoder.num_prefix_tokens,
                         self.model.num_classes, self.head_depth)
        if not self.tune_encoder:
            return head
        return EncoderExplainer(copy.deepcopy(encoder).requires_grad_(True), head)

    def param_groups(self) -> list[dict[str, Any]]:
        if not self.tune_encoder:
            return super().param_groups()
        return [{"params": list(self.net.head.parameters()), "lr": self.lr},
                {"params": list(self.net.encoder.parameters()), "lr": self.encoder_lr}]

    def raw_phi(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.tune_encoder:  # the explainer's own encoder: one pass, counted as a model pass
            self.extra_forward_rows += inputs.shape[0]
            return self.net(inputs)
        with torch.no_grad():  # the explained model's own encoder, frozen: counted at its stem
            tokens = self.model.encoder.tokens(inputs)
        return self.net(tokens)


class PatchCNN(nn.Module):
    """FastSHAP's explainer at CPU scale: a small CNN on the image (two 3x3 convolutions, a patch-size stride
    to the patch grid, a learned position embedding there, two 3x3 convolutions for context) giving one value
    per patch and class. The position embedding lets it weigh the same content differently by place, as a
    model's Shapley values do (a convolution alone is blind to position)."""

    def __init__(self, in_chans: int, patch_size: int, grid_size: int, num_classes: int, width: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, patch_size, stride=patch_size))
        self.position = nn.Parameter(torch.zeros(1, 2 * width, grid_size, grid_size))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.context = nn.Sequential(
            nn.GELU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.GELU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.GELU(), nn.Conv2d(2 * width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.context(self.stem(x) + self.position).flatten(2).transpose(1, 2)  # [B, n, C]


@register_method("fastshap")
class FastSHAPExplainer(AmortizedShapley):
    """FastSHAP (Jethani et al. 2022): a small CNN of its own on the image, trained with the Shapley-kernel
    WLS on the (surrogate) model's log-odds; efficiency by additive normalisation."""

    def __init__(self, model: nn.Module, width: int = 32, **options: Any):
        _check_options("fastshap", options, "width")
        if not isinstance(width, int) or width < 1:
            raise XaibenchError(f"method 'fastshap': width must be a positive integer, got {width!r}")
        self.width = width
        super().__init__(model, **options)

    def build_net(self) -> nn.Module:
        model = self.model
        return PatchCNN(model.in_chans, model.patch_size, model.grid_size, model.num_classes, self.width)
