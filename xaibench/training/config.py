"""The training config: a common part (steps, lr, batch ...), the model's options and each objective's options.

Flat dicts parse (`{"steps": 300, "arch": "small", "n_masks": 8}`, as `[train]` tables and `--set` give
them): a key goes to the common part, the model part or every objective whose options name it. The
nested form that `dataclasses.asdict` writes parses too. `resolve_objective` names the objective a training
runs with: the config's, else the model's own.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from xaibench.errors import XaibenchError
from xaibench.training.objectives import OBJECTIVES, Objective, check_objective, default_objective


@dataclass
class ModelConfig:
    """Options handed to the model factory. A named option reaches a model whose factory (or the class it is
    annotated to return) takes a parameter of that name; `model_options` reach every model as they are."""

    arch: str = "tiny"
    patch_size: int | None = None
    logit_scale_init: float = 10.0
    pretrained: str | None = None
    fill: str = "mean"
    masking: str = "token"  # ViT family: "token" (a mask token per removed patch) or "drop" (docs/metrics.md)
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. depth, embed_dim for the ViT encoder


def _all_objective_options() -> dict[str, Any]:
    return {name: OBJECTIVES.get(name).Options() for name in OBJECTIVES.names()}


@dataclass
class TrainConfig:
    """Training options. Paper (ViT-B, DINOv2 init): lr 1e-5, weight decay 1e-5, batch 64, ~10k steps,
    at most 100 epochs, M = 32 masks. The defaults are the CPU recipe chosen by measurement on the
    synthetic set (docs/training.md): 300 Segm steps, then 500 OFA steps with l3 weighted 5, uniform
    subset sizes and paired masks, logit scale 10. The baselines train for `steps` (500) as well."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 5e-4
    decoder_lr: float | None = None  # parameters outside the model's `encoder` (OFA/Segm decoder); None = lr
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    max_epochs: int = 100
    eval_every: int = 100
    objective: str | None = None  # None: the one the model declares (ce when it declares none)
    model: ModelConfig = field(default_factory=ModelConfig)
    objectives: dict[str, Any] = field(default_factory=_all_objective_options)  # objective name -> its options

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "max_epochs"):
            if getattr(self, name) < 1:
                raise XaibenchError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.objective is not None:
            check_objective(self.objective)
        if isinstance(self.model, dict) or any(isinstance(o, dict) for o in self.objectives.values()):
            parsed = TrainConfig.from_dict({"model": self.model if isinstance(self.model, dict) else asdict(self.model),
                                            "objectives": {name: o if isinstance(o, dict) else asdict(o)
                                                           for name, o in self.objectives.items()}})
            self.model, self.objectives = parsed.model, parsed.objectives

    def options_of(self, objective: str) -> Any:
        """The options of `objective` (its defaults when this config holds none, e.g. a late plugin's)."""
        options = self.objectives.get(objective)
        return options if options is not None else OBJECTIVES.get(objective).Options()

    def common(self) -> dict[str, Any]:
        """The common part as a flat dict (no model, no objective options)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "objectives")}

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "TrainConfig | None" = None) -> "TrainConfig":
        """Parse flat (or asdict-nested) options over `base` (default: the defaults); unknown keys raise."""
        base = base or cls()
        common, model = base.common(), asdict(base.model)
        objectives = {name: asdict(base.options_of(name)) for name in OBJECTIVES.names()}
        values = dict(values)
        unknown = [key for key in (values.get("model") or {}) if key not in model]
        model.update(values.pop("model", None) or {})
        for name, nested in (values.pop("objectives", None) or {}).items():
            options = objectives.setdefault(check_objective(name), asdict(OBJECTIVES.get(name).Options()))
            unknown += [key for key in nested if key not in options]
            options.update(nested)
        for key, value in values.items():
            owners = [options for options in objectives.values() if key in options]
            if key in common:
                common[key] = value
            elif key in model:
                model[key] = value
            elif owners:
                for options in owners:
                    options[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise XaibenchError(f"unknown training option(s) {', '.join(sorted(unknown))}; "
                                f"valid: {', '.join(valid_options())}")
        _check_types(cls, common)
        _check_types(ModelConfig, model)
        for name, options in objectives.items():
            _check_types(OBJECTIVES.get(name).Options, options)
        return cls(**common, model=ModelConfig(**copy.deepcopy(model)),
                   objectives={name: OBJECTIVES.get(name).Options(**options) for name, options in objectives.items()})

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict(changes, base=self)


_KINDS = {"int": int, "float": (int, float), "str": str, "bool": bool, "None": type(None)}


def _check_types(owner, values: dict[str, Any]) -> None:
    """A value whose field is annotated with plain types (int, float, str, bool, None) must be one of them."""
    annotations = {f.name: str(f.type) for f in fields(owner)}
    for key, value in values.items():
        kinds = [kind.strip() for kind in annotations.get(key, "?").split("|")]
        if not all(kind in _KINDS for kind in kinds):
            continue
        if not any(isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))
                   for kind in kinds):
            raise XaibenchError(f"training option {key} must be {' or '.join(kinds)}, got {value!r}")


def valid_options() -> list[str]:
    """Every flat option name: the common part, the model part and each registered objective's options."""
    names = {f.name for f in fields(TrainConfig) if f.name not in ("model", "objectives")}
    names |= {f.name for f in fields(ModelConfig)}
    for name in OBJECTIVES.names():
        names |= {f.name for f in fields(OBJECTIVES.get(name).Options)}
    return sorted(names)


def resolve_objective(model_name: str, config: TrainConfig) -> Objective:
    """The config's objective, else the one the model declares, with its options from the config."""
    name = config.objective or default_objective(model_name)
    return OBJECTIVES.get(name)(config.options_of(name))
