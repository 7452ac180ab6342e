"""--sweep: variants from KEY=V1,V2 specs, one merged plan, each variant's outputs equal to the plain run's."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from xaibench.engine.report_sweep import swept_columns
from xaibench.errors import XaibenchError
from xaibench.sweep import parse_sweeps, split_values

# columns and files that hold times (they differ from run to run)
TIMED = {"cost.csv", "cost_metrics.csv"}


def test_split_values_keeps_brackets_and_quotes_whole():
    assert split_values('2,4,[1,2],"a,b",{"x":1,"y":2}') == ["2", "4", "[1,2]", '"a,b"', '{"x":1,"y":2}']


def test_variants_are_the_product_named_by_their_pairs():
    variants = parse_sweeps(["n_masks=2,4", "steps=100,200"])
    assert [v.name for v in variants] == ["n_masks=2,steps=100", "n_masks=2,steps=200", "n_masks=4,steps=100",
                                          "n_masks=4,steps=200"]
    assert variants[1].overrides == {"n_masks": 2, "steps": 200}
    assert len({v.folder for v in variants}) == 4
    frame = swept_columns(variants)
    assert frame["n_masks"].tolist() == [2, 2, 4, 4] and pd.api.types.is_numeric_dtype(frame["steps"])


def test_values_are_typed_as_set_types_them():
    (text, flag, listed) = [parse_sweeps([spec])[0].overrides for spec in
                            ("detach=full", "informed=true", "loss_weights=[1,1,2]")]
    assert text == {"detach": "full"} and flag == {"informed": True} and listed == {"loss_weights": [1, 1, 2]}


@pytest.mark.parametrize("specs, says", [
    (["n_masks"], "KEY=V1,V2"),
    (["n_masks=2,", ], "empty value"),
    (["n_masks=2", "n_masks=4"], "given twice"),
    (["a=1,2,3,4,5", "b=1,2,3,4,5"], "25 variants"),
])
def test_bad_sweeps_name_the_problem(specs, says):
    with pytest.raises(XaibenchError, match=says):
        parse_sweeps(specs, max_variants=16)


def test_dry_run_lists_four_variants_and_trains_nothing(tiny_config, tmp_path, capsys):
    from xaibench.cli import main

    cache = tmp_path / "cache"
    code = main(["run", "--config", str(tiny_config), "--size", "16", "--out", str(tmp_path / "out"), "--cache",
                 str(cache), "--quiet", "--dry-run", "--sweep", "n_masks=2,4", "--sweep", "steps=4,6"])
    printed = capsys.readouterr().out
    assert code == 0
    assert [line.split(":")[0] for line in printed.splitlines() if line.startswith("variant ")] == [
        "variant n_masks=2,steps=4", "variant n_masks=2,steps=6", "variant n_masks=4,steps=4",
        "variant n_masks=4,steps=6"]
    assert "4 variants;" in printed
    assert not (tmp_path / "out").exists() and not list(cache.rglob("*.safetensors"))


@pytest.mark.parametrize("flags, says", [
    (["--sweep", "n_maskz=2,4"], "n_maskz"),
    (["--sweep", "n_masks=two,4"], "n_masks"),
    (["--sweep", "run.n_draws=0,2"], "n_draws"),
    (["--sweep", "n_masks=1,2,3", "--sweep", "steps=1,2,3", "--max-variants", "8"], "--max-variants 8"),
])
def test_bad_sweep_exits_2_before_any_work(tiny_config, tmp_path, capsys, flags, says):
    from xaibench.cli import main

    cache = tmp_path / "cache"
    code = main(["run", "--config", str(tiny_config), "--size", "16", "--out", str(tmp_path / "out"), "--cache",
                 str(cache), "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "out").exists() and not list(cache.rglob("*.safetensors"))


def _csv(path):
    return path.read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("backend", [["--backend", "serial"], ["--backend", "loky", "--jobs", "2"]])
def test_sweep_tables_equal_the_plain_runs(tiny_config, tmp_path, run_cli, backend):
    """Each variant's tables are the plain run's with --set of its values, and the combined files carry the
    variant column; the variant equal to the plain run reuses its cache."""
    cache = tmp_path / "cache"
    plain = {}
    for n_draws in (1, 2):
        plain[n_draws] = tmp_path / f"plain{n_draws}"
        assert run_cli(tiny_config, plain[n_draws], cache, "--threads", "1", "--set", f"run.n_draws={n_draws}") == 0
    sweep, fresh = tmp_path / "sweep", tmp_path / "fresh-cache"  # the sweep computes every unit itself
    assert run_cli(tiny_config, sweep, fresh, "--threads", "1", *backend, "--sweep", "run.n_draws=1,2") == 0
    for n_draws in (1, 2):
        folder = sweep / "variants" / f"run.n_draws={n_draws}"
        for name in ("table2.csv", "table2.md", "scores_long.csv", "curves.csv", "wilcoxon.csv", "ci.csv"):
            assert (folder / name).read_text() == (plain[n_draws] / name).read_text(), name
    combined = pd.read_csv(sweep / "scores_long.csv")
    assert combined.columns[0] == "variant"
    assert set(combined["variant"]) == {"run.n_draws=1", "run.n_draws=2"}
    for n_draws in (1, 2):
        alone = pd.read_csv(plain[n_draws] / "scores_long.csv")
        mine = combined[combined["variant"] == f"run.n_draws={n_draws}"].drop(columns="variant")
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), alone)
    table2 = _csv(sweep / "table2.csv")
    assert table2[0].startswith(",") and any(line.startswith("variant,") for line in table2[:4])
    summary = pd.read_csv(sweep / "sweep.csv")
    assert {"variant", "run.n_draws", "dataset", "method", "metric", "mean"} <= set(summary.columns)
    cost = pd.read_csv(sweep / "sweep_cost.csv")
    assert cost["variant"].tolist() == ["run.n_draws=1", "run.n_draws=2"]
    assert (cost["train_s"] > 0).all() and cost["train_s"].nunique() == 1  # one training, shared
    again = tmp_path / "again"  # a variant equal to the plain run: the plain run finds all of it cached
    assert run_cli(tiny_config, again, fresh, "--threads", "1", "--set", "run.n_draws=2") == 0
    record = json.loads((again / "manifest.json").read_text())
    assert record["n_cached"] == record["n_units"]
    assert (sweep / "figures" / "sweep.png").stat().st_size > 0
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert [v["name"] for v in manifest["variants"]] == ["run.n_draws=1", "run.n_draws=2"]


@pytest.mark.slow
def test_train_sweep_writes_each_variants_table1(tiny_config, tmp_path):
    from xaibench.cli import main

    out = tmp_path / "train"
    code = main(["train", "--models", "ofa", "--datasets", "synthetic", "--config", str(tiny_config), "--size",
                 "16", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet", "--sweep", "steps=3,6"])
    assert code == 0
    table1 = pd.read_csv(out / "table1_scores.csv")
    assert table1.columns[0] == "variant" and set(table1["variant"]) == {"steps=3", "steps=6"}
    assert (out / "variants" / "steps=3" / "table1.md").is_file()


def test_set_reaches_one_key_of_a_metric_or_method_option_table():
    from xaibench.engine.options import run_config

    config, _ = run_config({"run": {"metric_options": {"srg": {"eps": 1e-6}}}},
                           overrides={"run.metric_options.srg.removal": "blur",
                                      "run.method_options.captum.Lime.n_samples": 8})
    assert config["run"]["metric_options"] == {"srg": {"eps": 1e-6, "removal": "blur"}}
    assert config["run"]["method_options"] == {"captum.Lime": {"n_samples": 8}}


@pytest.mark.parametrize("value", ["abc", "1.5", "true"])
def test_a_dataset_option_of_the_wrong_type_exits_2(tiny_config, tmp_path, capsys, value):
    from xaibench.cli import main

    code = main(["run", "--config", str(tiny_config), "--size", "16", "--out", str(tmp_path / "out"), "--quiet",
                 "--dry-run", "--set", f"data.synthetic.n_samples={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "n_samples" in err and "expected int" in err and "Traceback" not in err


@pytest.mark.slow
def test_python_api_sweeps_too(tiny_config, tmp_path):
    import xaibench

    frames = xaibench.run(out=tmp_path / "api", config=tiny_config, size=16, progress=False,
                          cache=tmp_path / "cache", methods=["grad"], sweep={"run.n_draws": [1, 2]})
    assert set(frames.scores["variant"]) == {"run.n_draws=1", "run.n_draws=2"}
    assert (tmp_path / "api" / "variants" / "run.n_draws=2" / "table2.md").is_file()


def test_run_removal_reaches_the_curve_metrics_and_keeps_the_default_keys():
    from xaibench.engine.options import RunOptions

    plain, blur = RunOptions.from_dict({}), RunOptions.from_dict({"removal": "blur"})
    assert "removal" not in plain.metric_options_for("srg")  # the default run's score keys stay as they were
    assert blur.metric_options_for("srg")["removal"] == "blur"
    assert blur.metric_options_for("aopc")["removal"] == "blur"
    assert "removal" not in blur.metric_options_for("truth")
    own = RunOptions.from_dict({"removal": "blur", "metric_options": {"srg": {"removal": "zero"}}})
    assert own.metric_options_for("srg")["removal"] == "zero"
    with pytest.raises(XaibenchError, match="expected one of token, mean"):
        RunOptions.from_dict({"removal": "bluur"})
