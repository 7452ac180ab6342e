"""The explainer interface: one class per method, one verb `attribute(inputs, target) -> [B, n]` (Captum's).

`run_explainer`, the thin wrapper the runner calls, times the batch, counts passes and checks every output.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from xaibench.errors import ExplainerOutputError, XaibenchError
from xaibench.registry import METHODS


@dataclass
class Explanation:
    """What `run_explainer` returns for a batch of B images with n patches: the attributions and their cost."""

    method: str
    attributions: torch.Tensor  # [B, n] float, on the inputs' device; higher = more important for the target
    seconds: float = 0.0  # wall time for the whole batch (CUDA synchronised)
    n_forward: float = 0.0  # forward passes through the model per image (counted)
    n_backward: float = 0.0  # backward passes through the model per image (counted)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(self.attributions.shape[0], 1)


def _stem(model: nn.Module) -> nn.Module | None:
    """The model's first leaf module in registration order: the layer every forward pass starts with."""
    for module in model.modules():
        if module is not model and not any(True for _ in module.children()):
            return module
    return None


class PassCounter:
    """Counts image rows through the model: forwards at its stem, backwards when a gradient reaches a probe.

    A forward pass = one image through the model's first leaf module (ViT patch embedding, ResNet conv1),
    whichever public method ran it (forward, forward_fn, shapley, last_block_attention). A backward pass =
    one image's gradient arriving at the stem's output, or at an extra probe module for methods whose
    backward stops inside the network (Grad-CAM); the largest count over the probes is reported.
    Models without submodules fall back to counting calls of their `forward`.
    """

    def __init__(self, model: nn.Module, probes: tuple[nn.Module, ...] = ()):
        self.model = model
        self.probes = probes
        self.forward_rows = 0
        self.backward_rows: dict[int, int] = {}
        self._handles: list[Any] = []
        self._patched_forward = False

    def _watch_backward(self, key: int, output: Any) -> None:
        tensor = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
            rows = tensor.shape[0]

            def on_grad(grad: torch.Tensor) -> None:
                self.backward_rows[key] = self.backward_rows.get(key, 0) + rows

            tensor.register_hook(on_grad)

    def _on_stem(self, module: nn.Module, args: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, (tuple, list)) else output
        self.forward_rows += tensor.shape[0]
        self._watch_backward(0, output)

    def __enter__(self) -> "PassCounter":
        stem = _stem(self.model)
        if stem is not None:
            self._handles.append(stem.register_forward_hook(self._on_stem))
        else:
            original = self.model.forward

            def counted_forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
                output = original(x, *args, **kwargs)
                self.forward_rows += x.shape[0]
                self._watch_backward(0, output)
                return output

            self.model.forward = counted_forward  # instance attribute: also seen by forward_fn
            self._patched_forward = True
        for key, probe in enumerate(self.probes, start=1):
            self._handles.append(probe.register_forward_hook(
                lambda module, args, output, key=key: self._watch_backward(key, output)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._patched_forward:
            del self.model.forward
            self._patched_forward = False

    @property
    def max_backward_rows(self) -> int:
        return max(self.backward_rows.values(), default=0)


@contextlib.contextmanager
def seeded_global_rng(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global RNGs from `generator` for code that takes no generator (Captum).

    The global states are restored afterwards; with generator=None the global RNGs are used as they are.
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    cuda_devices = [device] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Explainer:
    """Base of every explainer. A subclass overrides `attribute` and nothing else; the runner calls `run_explainer`.

    `attribute(inputs [B,C,H,W], target long [B], generator=None)` returns patch scores [B, n] (a method that
    computes a pixel map returns `self.to_patches(pixel_map)`). What a method needs of its model is declared, not
    coded: `families` (read by `unsuited_reason`, for the tables), `requires` and `requirement` (also checked at
    construction: a model without them is refused).
    """

    #: run `attribute` with autograd enabled (False: under torch.no_grad, faster)
    needs_gradients: bool = True
    #: the model families (a model's `family`: "vit", "cnn", ...) the method suits; None = any model
    families: tuple[str, ...] | None = None
    #: model attributes the method calls (dotted names); a model without one is refused at construction
    requires: tuple[str, ...] = ()
    #: how a refusal names the model the method needs (default: "a model with <requires>")
    requirement: str = ""
    #: an option that, when given, makes the method suit every family (Grad-CAM's explicit `layer`)
    any_family_option: str | None = None
    #: modules where a backward pass that stops inside the network is counted (Grad-CAM's layer; default none)
    probes: tuple[nn.Module, ...] = ()
    #: image rows the method ran through networks other than the model (a fine-tuned copy), which PassCounter
    #: cannot see; `run_explainer` zeroes it before `attribute` and counts it as forward passes
    extra_forward_rows: int = 0

    def __init__(self, model: nn.Module):
        for attribute in ("n_patches", "patch_size", "grid_size", "forward_fn"):
            if not hasattr(model, attribute):
                raise XaibenchError(f"method {self.name!r} needs a MaskedClassifier (a model with n_patches, "
                                    f"patch_size and forward_fn); got {type(model).__name__}")
        missing = _missing(model, self.requires)
        if missing:
            raise XaibenchError(f"method {self.name!r} needs {_requirement(type(self))}, got {type(model).__name__}")
        self.model = model

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.name!r}, model={type(self.model).__name__})"

    # -- the one verb ---------------------------------------------------------------
    def attribute(self, inputs: torch.Tensor, target: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Patch scores [B, n] of `inputs` [B, C, H, W] for the target classes `target` long [B]."""
        raise NotImplementedError(f"method {self.name!r}: {type(self).__name__} does not implement attribute()")

    def to_patches(self, pixel_map: torch.Tensor) -> torch.Tensor:
        """A pixel map [B, H, W] as patch scores [B, n]: float, summed over each patch (detached)."""
        return self.model.pixels_to_patches(pixel_map.detach().float())


def run_explainer(explainer: Explainer, inputs: torch.Tensor, target: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> Explanation:
    """`explainer.attribute(inputs [B, C, H, W], target long [B], generator)` with its cost: wall time (CUDA
    synchronised), forward/backward passes per image, under torch.no_grad unless the method `needs_gradients`.

    The inputs and targets are checked first (one-line XaibenchError), the output after: a tensor [B, n] of
    finite values, else ExplainerOutputError naming the method.
    """
    target = _checked_target(explainer, inputs, target)
    device = inputs.device
    explainer.extra_forward_rows = 0
    _synchronize(device)
    start = time.perf_counter()
    with (PassCounter(explainer.model, tuple(explainer.probes)) as counter,
          torch.set_grad_enabled(explainer.needs_gradients)):
        raw = explainer.attribute(inputs, target, generator)  # positional: a plugin may name them as it likes
    _synchronize(device)
    seconds = time.perf_counter() - start
    attributions = _checked_attributions(explainer, raw, inputs)
    batch = inputs.shape[0]
    n_forward = counter.forward_rows / batch + explainer.extra_forward_rows / batch
    return Explanation(explainer.name, attributions, seconds, n_forward, counter.max_backward_rows / batch)


def _checked_target(explainer: Explainer, inputs: torch.Tensor, target: Any) -> torch.Tensor:
    """`target` as long [B] on the inputs' device, once inputs and targets are checked against the model."""
    model, name = explainer.model, explainer.name
    side = model.grid_size * model.patch_size
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or inputs.shape[-2:] != (side, side):
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise XaibenchError(f"method {name!r}: inputs must be [B, C, {side}, {side}], got {shape}")
    target = torch.as_tensor(target, device=inputs.device)
    if target.shape != (inputs.shape[0],) or target.is_floating_point():
        raise XaibenchError(f"method {name!r}: targets must be integer class ids [B]="
                            f"[{inputs.shape[0]}], got {target.dtype} {tuple(target.shape)}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and bool(((target < 0) | (target >= num_classes)).any()):
        raise XaibenchError(f"method {name!r}: targets must lie in 0..{num_classes - 1}, "
                            f"got {target.min().item()}..{target.max().item()}")
    return target.long()


def _checked_attributions(explainer: Explainer, raw: Any, inputs: torch.Tensor) -> torch.Tensor:
    """`attribute`'s output as float [B, n] on the inputs' device, or ExplainerOutputError."""
    b, _, h, w = inputs.shape
    n, name = explainer.model.n_patches, explainer.name
    if not isinstance(raw, torch.Tensor):
        raise ExplainerOutputError(f"method {name!r} returned {type(raw).__name__}, not a tensor [B, n]=[{b}, {n}]")
    raw = raw.detach()
    if raw.shape != (b, n):
        hint = "; a pixel map [B, H, W]: return self.to_patches(pixel_map)" if raw.shape == (b, h, w) else ""
        raise ExplainerOutputError(f"method {name!r} returned attributions of shape {tuple(raw.shape)}; "
                                   f"expected [B, n]=[{b}, {n}]{hint}")
    bad = ~torch.isfinite(raw)
    if bad.any():
        kinds = sorted({str(v) for v in raw[bad].flatten()[:1000].tolist()})
        raise ExplainerOutputError(f"method {name!r} returned {int(bad.sum())} non-finite attribution "
                                   f"values ({', '.join(kinds)}) in a tensor of shape {tuple(raw.shape)}")
    return raw.float().to(inputs.device)


class FittedExplainer(Explainer):
    """An amortized explainer: it has weights of its own, trained on the explained model and the training split
    before it explains (ViT-Shapley, FastSHAP). The engine plans a `fit` unit per dataset, seed and method,
    caches its state like any unit, and hands that state to `load_fitted` before the explain unit runs.

    A subclass overrides `fit` (returning its state: a dict of tensors), `load_fitted` and `attribute`.
    `attribute` must work unfitted too (with its initial weights): the run's probe calls it before training.
    """

    def fit(self, train, generator: torch.Generator, progress: bool = False) -> dict[str, torch.Tensor]:
        """Train the explainer on `train` (an ImageDataset; its images reach the model through `train.batch`)
        with draws from `generator`; return its state."""
        raise NotImplementedError(f"method {self.name!r}: {type(self).__name__} does not implement fit()")

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Take the state `fit` returned (on the CPU; move it to the model's device)."""
        raise NotImplementedError(f"method {self.name!r}: {type(self).__name__} does not implement load_fitted()")


def is_fitted(method_name: str) -> bool:
    """Whether a registered method is an amortized explainer that needs a fit unit."""
    factory = METHODS.get(method_name)
    return inspect.isclass(factory) and issubclass(factory, FittedExplainer)


def create_method(name: str, model: nn.Module, **options: Any) -> Explainer:
    """Build the registered explainer `name` for `model`; an unknown option is a one-line XaibenchError."""
    factory = METHODS.get(name)
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        valid = [p for p in parameters if p not in ("self", "model")]
        for option in options:
            if option not in valid:
                raise XaibenchError(f"method {name!r} has no option {option!r}; valid options: "
                                    f"{', '.join(valid) or '(none)'}")
    return factory(model=model, **options)


# -- which model a method suits ---------------------------------------------------------------------------------

FAMILY_NAMES = {"vit": "ViT", "cnn": "CNN"}
_ABSENT: Any = object()


def _missing(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    """The dotted attribute names (e.g. 'encoder.num_prefix_tokens') that `model` lacks."""
    missing = []
    for dotted in names:
        value: Any = model
        for part in dotted.split("."):
            value = getattr(value, part, _ABSENT)
            if value is _ABSENT:
                missing.append(dotted)
                break
    return missing


def _requirement(factory: Any) -> str:
    return getattr(factory, "requirement", "") or f"a model with {', '.join(getattr(factory, 'requires', ()))}"


def unsuited_reason(method_name: str, model: nn.Module, options: Mapping[str, Any] | None = None) -> str | None:
    """Why the registered method `method_name` does not suit `model` (one short line), or None when it does.

    A method suits a model when the model's `family` (None = unknown) is one of the method's `families` (None =
    any model, unknown ones included) and the model has every attribute the method `requires`. A method whose
    `any_family_option` is among `options` (Grad-CAM's explicit `layer`) suits every family.
    """
    factory = METHODS.get(method_name)
    families = getattr(factory, "families", None)
    family = getattr(model, "family", None)
    free_option = getattr(factory, "any_family_option", None)
    lifted = free_option is not None and (options or {}).get(free_option) is not None
    if families is not None and family not in families and not lifted:
        wanted = " or ".join(f"{FAMILY_NAMES.get(f, f)}-family" for f in families)
        return f"{method_name} needs a {wanted} model (model family: {family or 'unknown'})"
    missing = _missing(model, tuple(getattr(factory, "requires", ())))
    if missing:
        return f"{method_name} needs {_requirement(factory)}; {type(model).__name__} has no {', '.join(missing)}"
    return None
