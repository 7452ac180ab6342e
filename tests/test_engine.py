"""The engine as plan -> execute -> collect -> report, tested without training a model."""
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from xaibench.cli import main
from xaibench.engine import (
    UNIT_KINDS,
    Context,
    Outcome,
    RunFailedError,
    RunOptions,
    Unit,
    UnitKind,
    collect,
    execute,
    plan_run,
    register_kind,
    run_config,
    write_run_outputs,
)

# the synthetic lesion set without the sanity check (the defaults are the objects set and 16 sanity images)
TINY = {"run": {"datasets": ["synthetic"], "sanity_images": 0, "n_test": 6, "curve_points": 3, "batch_size": 4,
                "n_figure_images": 2},
        "train": {"steps": 4, "batch_size": 8, "eval_every": 2, "warmup_steps": 1, "init_steps": 2, "n_masks": 2,
                  "model_options": {"depth": 1, "embed_dim": 32, "num_heads": 2}},
        "data": {"synthetic": {"n_samples": 48}}}


def tiny_plan(flags=None, overrides=None, **kw):
    config, train_overrides = run_config(TINY, {"size": 16, **(flags or {})}, overrides)
    options = RunOptions.from_dict(config["run"])
    plan, _ = plan_run(options, config=config, overrides=train_overrides, root=None, device=torch.device("cpu"), **kw)
    return options, plan


def test_plan_lists_every_unit_with_keys_chained_through_dependencies():
    options, plan = tiny_plan({"seeds": [0, 1]})
    assert [u.kind for u in plan[:5]] == ["train", "explain", "score", "score", "score"]
    assert len(plan) == 2 * (1 + 3 * (1 + 3))  # per seed: train, 3 methods x (explain + srg, rsrg, plausibility)
    assert len({u.key for u in plan}) == len(plan)
    by_key = {u.key: u for u in plan}
    for unit in plan:  # every dependency is planned before the unit
        assert all(plan.index(by_key[dep]) < plan.index(unit) for dep in unit.dep_keys)
    explain = next(u for u in plan if u.label == "explain synthetic/seed1/grad")
    assert by_key[explain.deps["model"]].label == "train synthetic/seed1/ofa"

    # another method option changes that explanation and its scores, not the training or other methods
    _, other = tiny_plan({"seeds": [0, 1]}, {"run.method_options": {"grad": {"absolute": True}}})
    changed = {u.label for u, v in zip(plan, other) if u.key != v.key}
    assert changed == {"explain synthetic/seed0/grad", "explain synthetic/seed1/grad",
                       *(f"score synthetic/seed{s}/grad/{m}" for s in (0, 1) for m in ("srg", "rsrg", "plausibility"))}
    # a training option changes everything downstream of the training
    _, retrained = tiny_plan({"seeds": [0, 1]}, {"lr": 1e-3})
    assert all(u.key != v.key for u, v in zip(plan, retrained))


def test_the_objects_plan_adds_a_truth_unit_reference_scores_and_a_sanity_unit_per_method():
    options, plan = tiny_plan({"datasets": ["objects"], "sanity_images": 2})
    by_key = {u.key: u for u in plan}
    assert [u.kind for u in plan[:8]] == ["train", "truth", "explain", "score", "score", "score", "score", "sanity"]
    # per seed: train, truth, 3 methods x (explain + srg, rsrg, plausibility, truth + sanity), reference x 3 scores
    assert len(plan) == 1 + 1 + 3 * (1 + 4 + 1) + 3 and len({u.key for u in plan}) == len(plan)
    truth = next(u for u in plan if u.kind == "truth")
    assert truth.label == "truth objects/seed0" and by_key[truth.deps["model"]].kind == "train"
    grad_truth = next(u for u in plan if u.label == "score objects/seed0/grad/truth")
    assert grad_truth.deps["truth"] == truth.key  # the truth metric reads the model's exact object Shapley values
    assert [u.label for u in plan if u.kind == "score" and u.params.method == "reference"] == \
        [f"score objects/seed0/reference/{m}" for m in ("srg", "rsrg", "plausibility")]  # no truth of the truth
    assert [u.params.n_images for u in plan if u.kind == "sanity"] == [2, 2, 2]
    _, without = tiny_plan({"datasets": ["objects"], "sanity_images": 0})
    assert [u.label for u in without] == [u.label for u in plan if u.kind != "sanity"]


def test_baselines_join_the_plan_and_the_shared_training_is_planned_once(monkeypatch):
    from xaibench.engine import plan as engine_plan

    monkeypatch.setattr(engine_plan, "BASELINE_MODELS", ["segm", "ofa"])
    _, plan = tiny_plan(train_baselines=True)
    labels = [u.label for u in plan]
    assert labels.count("train synthetic/seed0/ofa") == 1
    assert labels[-3:] == ["train synthetic/seed0/segm", "evaluate synthetic/seed0/segm",
                           "evaluate synthetic/seed0/ofa"]


def test_dry_run_prints_the_plan_fast_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    start = time.perf_counter()
    assert main(["run", "--config", str(config), "--size", "16", "--dry-run", "--out", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "cache")]) == 0
    assert time.perf_counter() - start < 10
    printed = capsys.readouterr().out
    assert "to do  train synthetic/seed0/ofa" in printed
    assert "13 units (1 train, 3 explain, 9 score); 0 cached, 13 to compute" in printed
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@register_kind
class _EchoKind(UnitKind):
    """A unit kind for tests: returns its params' value plus its dependencies' values; fails on request."""

    name = "test.echo"

    def compute(self, unit, ctx, deps):
        if unit.params.fail:
            raise ValueError(f"{unit.label} was told to fail")
        return {"value": torch.tensor(unit.params.value + sum(float(d["value"]) for d in deps.values())),
                "seconds": 0.0}


@dataclass(frozen=True)
class _EchoParams:
    value: float
    fail: bool = False


def _echo_plan(fail: bool):
    return [Unit("test.echo", "a", "key-a", params=_EchoParams(1.0, fail)),
            Unit("test.echo", "b (needs a)", "key-b", {"upstream": "key-a"}, params=_EchoParams(2.0)),
            Unit("test.echo", "c", "key-c", params=_EchoParams(5.0)),
            Unit("test.echo", "d (needs b)", "key-d", {"upstream": "key-b"}, params=_EchoParams(1.0))]


def test_a_unit_that_depends_on_a_failed_unit_is_skipped_not_attempted(tmp_path):
    ctx = Context(torch.device("cpu"), tmp_path, progress=False)
    with pytest.raises(RunFailedError, match="a failed: ValueError: a was told to fail"):
        execute(_echo_plan(fail=True), ctx, on_error="stop")
    outcomes = execute(_echo_plan(fail=True), ctx, on_error="continue")
    assert {k: o.status for k, o in outcomes.items()} == {"key-a": "failed", "key-b": "skipped", "key-c": "done",
                                                          "key-d": "skipped"}
    assert outcomes["key-b"].error == "a failed"
    assert not ctx.store.path("test.echo", "key-b").exists()

    outcomes = execute(_echo_plan(fail=False), ctx, on_error="stop")
    assert [o.status for o in outcomes.values()] == ["done", "done", "cached", "done"]
    assert float(outcomes["key-d"].payload["value"]) == 1.0 + 2.0 + 1.0
    with pytest.raises(Exception, match="unknown on_error 'ignore'"):
        execute([], ctx, on_error="ignore")
    assert "test.echo" in UNIT_KINDS


def _fake_outcomes(plan, n_images: int, n_patches: int = 16):
    """Outcomes as an execution would give them, made by hand: no model is trained or run."""
    outcomes = {}
    for unit in plan:
        if unit.kind == "train":
            payload = SimpleNamespace(model=None, path=Path("ofa-synthetic.pt"),
                                      record={"val_acc": 0.5, "best_step": 2})
        elif unit.kind == "explain":
            payload = {"method": unit.params.method, "attributions": torch.rand(n_images, n_patches),
                       "seconds": 0.5, "n_forward": 1.0, "n_backward": 1.0,
                       "targets": torch.zeros(n_images, dtype=torch.long)}
        else:
            base = {"ofa": 0.4, "grad": 0.3, "attn": 0.1}[unit.params.method]
            payload = {"scores": {unit.params.metric: base + 0.01 * torch.arange(n_images).float()},
                       "curves": {"mif": torch.rand(n_images, 3)}, "x": torch.linspace(0, 1, 3), "n_forward": 3,
                       "seconds": 0.1}
        outcomes[unit.key] = Outcome(unit, "done", 0.1, payload)
    return outcomes


def test_collect_and_report_turn_outcomes_into_tables_without_a_model(tmp_path):
    options, plan = tiny_plan()
    ctx = Context(torch.device("cpu"), tmp_path / "cache", progress=False)
    outcomes = _fake_outcomes(plan, options.n_test)
    explain_attn = next(u for u in plan if u.label == "explain synthetic/seed0/attn")
    outcomes[explain_attn.key] = Outcome(explain_attn, "n/a", error="attn needs a ViT-family model")
    for unit in plan:
        if unit.deps.get("explanation") == explain_attn.key:
            outcomes[unit.key] = Outcome(unit, "n/a", error="attn needs a ViT-family model")
    frames = collect(plan, outcomes, ctx, n_figure_images=2)
    assert len(frames.scores) == 2 * 3 * options.n_test  # ofa and grad, srg/rsrg/plausibility per image
    assert set(frames.scores["method"]) == {"ofa", "grad"}
    assert frames.unavailable == {("synthetic", "attn"): "attn needs a ViT-family model"}
    assert frames.figure_data["synthetic"]["maps"]["ofa"].shape == (2, 16, 16)
    files = write_run_outputs(tmp_path / "out", frames, options.methods, options.datasets)
    table = pd.read_csv(tmp_path / "out" / "table2.csv", header=[0, 1], index_col=0, keep_default_na=False)
    # mean of 40..45 and its bootstrap interval over the 6 images (a seeded resampling: the same every run)
    assert table.loc["OFA", ("Synthetic", "SRG")] == "42.50 [41.17, 43.83]"
    assert table.loc["Attn"].tolist() == ["n/a", "n/a"]
    assert {Path(f).name for f in files} >= {"table2.csv", "table2.tex", "scores_long.csv", "summary.csv", "ci.csv"}
    assert frames.checkpoints == {"synthetic/seed0": {"file": "ofa-synthetic.pt", "val_acc": 0.5, "best_step": 2}}


def test_unreadable_or_older_cache_entries_are_recomputed_and_said_once(tmp_path, caplog):
    ctx = Context(torch.device("cpu"), tmp_path, progress=False)
    plan = _echo_plan(fail=False)
    execute(plan, ctx)
    ctx.store.path("test.echo", "key-a").write_bytes(b"not a torch file")
    torch.save({"value": torch.tensor(9.0)}, ctx.store.path("test.echo", "key-c"))  # no format record: older
    with caplog.at_level("WARNING", logger="xaibench.run"):
        outcomes = execute(plan, ctx)
    assert [o.status for o in outcomes.values()] == ["done", "cached", "done", "cached"]
    assert float(outcomes["key-c"].payload["value"]) == 5.0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("deleted 2 cached unit file(s)")
    assert [o.status for o in execute(plan, ctx).values()] == ["cached"] * 4
