"""A unit kind is one class: registered from this file, it is planned, executed, collected and written with no
edit to the engine."""
from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pandas as pd
import pytest
import torch

from xaibench.cache import unit_key
from xaibench.engine import UNIT_KINDS, Scope, Unit, UnitKind, register_kind


@dataclass(frozen=True)
class MassParams:
    dataset: str
    seed: int
    method: str


class AttributionMassKind(UnitKind):
    """Per explained image, the sum of its attribution over the patches (a toy metric of its own kind)."""

    name = "test_mass"

    def plan(self, scope: Scope):
        if scope.level == "method":
            explained = scope.units["explanation"]
            key = unit_key("test_mass", {"explanation": explained.key})
            scope.add("mass", Unit(self.name, f"mass {scope.dataset}/seed{scope.seed}/{scope.method}", key,
                                   {"explanation": explained.key}, MassParams(scope.dataset, scope.seed, scope.method)))

    def compute(self, unit, ctx, deps):
        return {"mass": deps["explanation"]["attributions"].sum(dim=1)}

    def rows(self, unit, outcome, collector):
        p = unit.params
        collector.add("attribution_mass", [{"dataset": p.dataset, "seed": p.seed, "method": p.method,
                                            "image": image, "mass": float(mass)}
                                           for image, mass in enumerate(outcome.payload["mass"])])


@pytest.fixture
def mass_kind():
    register_kind(AttributionMassKind)
    yield UNIT_KINDS[AttributionMassKind.name]
    del UNIT_KINDS[AttributionMassKind.name]


def test_a_kind_registered_here_is_planned_executed_collected_and_written(tmp_path, tiny_config, run_cli, mass_kind):
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--methods", "grad,random", "--no-figures") == 0
    mass = pd.read_csv(out / "attribution_mass.csv")
    assert sorted(set(mass["method"])) == ["grad", "random"] and len(mass) == 2 * 8
    # the rows are the sums of the attributions the explain units computed (read back from --save-attributions)
    again = tmp_path / "again"
    assert run_cli(tiny_config, again, tmp_path / "cache", "--methods", "grad", "--no-figures",
                   "--save-attributions") == 0
    from safetensors.torch import load_file

    saved = load_file(str(again / "attributions" / "synthetic_seed0_grad.safetensors"))
    grad = mass[mass["method"] == "grad"].sort_values("image")["mass"].to_numpy()
    assert torch.allclose(saved["attributions"].double().sum(dim=1), torch.tensor(grad), rtol=1e-5)


def test_units_are_frozen_records_with_dependencies_by_role(tiny_config):
    from xaibench.config import read_config
    from xaibench.engine import plan_run
    from xaibench.runner import RunRequest

    request = RunRequest.build(read_config(tiny_config), {"size": 16, "methods": "grad"}, out="unused", device="cpu")
    plan, _ = plan_run(request.options, config=request.config, overrides=request.overrides, root=None,
                       device=request.device)
    by_key = {unit.key: unit for unit in plan}
    score = next(unit for unit in plan if unit.kind == "score")
    assert set(score.deps) == {"model", "explanation"}
    assert by_key[score.deps["explanation"]].kind == "explain" and by_key[score.deps["model"]].kind == "train"
    with pytest.raises(FrozenInstanceError):
        score.params.metric = "other"


def test_the_built_in_kinds_plan_in_their_documented_order_and_a_fitted_method_explains_after_its_fit(tiny_config):
    from xaibench.config import read_config
    from xaibench.engine import plan_run
    from xaibench.runner import RunRequest

    builtin = ["train", "load", "evaluate", "truth", "fit", "explain", "score", "sanity"]
    by_order = sorted(UNIT_KINDS.values(), key=lambda kind: kind.planning_order)
    assert [kind.name for kind in by_order if kind.name in builtin] == builtin
    request = RunRequest.build(read_config(tiny_config), {"size": 16, "methods": "vit_shapley"}, out="unused",
                               device="cpu")
    plan, _ = plan_run(request.options, config=request.config, overrides=request.overrides, root=None,
                       device=request.device)
    kinds = [unit.kind for unit in plan]
    assert kinds.index("fit") < kinds.index("explain")
    explain = plan[kinds.index("explain")]
    assert explain.deps["fitted"] == plan[kinds.index("fit")].key
