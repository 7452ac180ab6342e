"""The explainer interface: one class per method, one verb `explain(inputs, targets) -> Explanation`.

The base class times the batch, counts forward/backward passes through the model and checks every output.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from xaibench.errors import ExplainerOutputError, XaibenchError
from xaibench.registry import METHODS


@dataclass
class Explanation:
    """What an explainer returns for a batch of B images of side H with n patches."""

    method: str
    attributions: torch.Tensor  # [B, n] float, on the inputs' device; higher = more important for the target
    pixel_map: torch.Tensor | None = None  # [B, H, W] where the method has a pixel-level map (for figures)
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


_NO_TARGET: Any = object()  # `targets` / `target` not given


def _one_target(method: str, targets: Any, target: Any) -> Any:
    """explain's target classes, given either as `targets` or as Captum's keyword `target` (exactly one of them)."""
    if targets is not _NO_TARGET and target is not _NO_TARGET:
        raise XaibenchError(f"method {method!r}: explain() got both targets and target; pass one of them")
    if targets is _NO_TARGET and target is _NO_TARGET:
        raise XaibenchError(f"method {method!r}: explain() needs the target classes (targets=... or target=...)")
    return target if targets is _NO_TARGET else targets


def _accepting_target(attribute: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a subclass's `attribute(inputs, targets, generator)` so that it also takes `target=` (Captum's name)."""

    @functools.wraps(attribute)
    def attribute_with_target(self: "Explainer", inputs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        keywords = [kwargs.pop(name) for name in ("targets", "target") if name in kwargs]
        if not keywords:
            return attribute(self, inputs, *args, **kwargs)
        if args or len(keywords) > 1:  # the first positional argument after inputs is the targets
            raise XaibenchError(f"method {self.name!r}: attribute() got the target classes twice; "
                                f"pass them once (positionally, as targets= or as target=)")
        return attribute(self, inputs, keywords[0], **kwargs)  # positional: any parameter name works

    attribute_with_target.accepts_target = True  # type: ignore[attr-defined]
    return attribute_with_target


class Explainer:
    """Base of every explainer. A subclass overrides `attribute` and nothing else; callers use `explain`.

    `attribute(inputs [B,C,H,W], targets long [B], generator)` returns patch scores [B, n], or a pixel map
    [B, H, W] that the base class sums over each patch (and keeps as `pixel_map`). Both verbs also take the
    target classes as Captum's keyword `target=` (one wrapper, added to every subclass's `attribute`). What a
    method needs of its model is declared, not coded: `families` (read by `unsuited_reason`, for the tables),
    `requires` and `requirement` (also checked at construction: a model without them is refused).
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        attribute = cls.__dict__.get("attribute")
        if attribute is not None and not getattr(attribute, "accepts_target", False):
            cls.attribute = _accepting_target(attribute)

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

    # -- the one hook ---------------------------------------------------------------
    def attribute(self, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Patch scores [B, n] or a pixel map [B, H, W] for the target classes."""
        raise NotImplementedError(f"method {self.name!r}: {type(self).__name__} does not implement attribute()")

    # -- the one verb ---------------------------------------------------------------
    def explain(self, inputs: torch.Tensor, targets: torch.Tensor = _NO_TARGET, *, target: torch.Tensor = _NO_TARGET,
                generator: torch.Generator | None = None) -> Explanation:
        """Explain `inputs` [B, C, H, W] for `targets` (or `target=`) long [B]: patch attributions [B, n] plus cost."""
        targets = self._check_inputs(inputs, _one_target(self.name, targets, target))
        device = inputs.device
        _synchronize(device)
        start = time.perf_counter()
        with PassCounter(self.model, tuple(self.probes)) as counter, torch.set_grad_enabled(self.needs_gradients):
            raw = self.attribute(inputs, targets, generator)
        _synchronize(device)
        seconds = time.perf_counter() - start
        attributions, pixel_map = self._check_output(raw, inputs)
        batch = inputs.shape[0]
        return Explanation(self.name, attributions, pixel_map, seconds,
                           counter.forward_rows / batch, counter.max_backward_rows / batch)

    __call__ = explain

    # -- guards -----------------------------------------------------------------------
    def _check_inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        model = self.model
        side = model.grid_size * model.patch_size
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or inputs.shape[-2:] != (side, side):
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise XaibenchError(f"method {self.name!r}: inputs must be [B, C, {side}, {side}], got {shape}")
        targets = torch.as_tensor(targets, device=inputs.device)
        if targets.shape != (inputs.shape[0],) or targets.is_floating_point():
            raise XaibenchError(f"method {self.name!r}: targets must be integer class ids [B]="
                                f"[{inputs.shape[0]}], got {targets.dtype} {tuple(targets.shape)}")
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and bool(((targets < 0) | (targets >= num_classes)).any()):
            raise XaibenchError(f"method {self.name!r}: targets must lie in 0..{num_classes - 1}, "
                                f"got {targets.min().item()}..{targets.max().item()}")
        return targets.long()

    def _check_output(self, raw: Any, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, _, h, w = inputs.shape
        n = self.model.n_patches
        if not isinstance(raw, torch.Tensor):
            raise ExplainerOutputError(f"method {self.name!r} returned {type(raw).__name__}, not a tensor "
                                       f"[B, n]=[{b}, {n}]")
        raw = raw.detach()
        if raw.shape == (b, n):
            pixel_map = None
        elif raw.shape == (b, h, w):
            pixel_map = raw.float().to(inputs.device)
        else:
            raise ExplainerOutputError(f"method {self.name!r} returned attributions of shape {tuple(raw.shape)}; "
                                       f"expected [B, n]=[{b}, {n}] or a pixel map [B, H, W]=[{b}, {h}, {w}]")
        bad = ~torch.isfinite(raw)
        if bad.any():
            kinds = sorted({str(v) for v in raw[bad].flatten()[:1000].tolist()})
            raise ExplainerOutputError(f"method {self.name!r} returned {int(bad.sum())} non-finite attribution "
                                       f"values ({', '.join(kinds)}) in a tensor of shape {tuple(raw.shape)}")
        if pixel_map is not None:
            return self.model.pixels_to_patches(pixel_map), pixel_map
        return raw.float().to(inputs.device), None


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
