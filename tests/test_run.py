"""`xaibench run`: the whole benchmark through the CLI, caching and resume after a real kill, errors, tables."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xaibench.cli import main
from xaibench.engine import plan as engine_plan
from xaibench.errors import XaibenchError
from xaibench.runner import RunOptions, run_config
from xaibench.tables import plausibility_table, table2, to_latex, wilcoxon_tests, without_ci

REPO = Path(__file__).resolve().parents[1]

NAN_PLUGIN = '''
import torch
from xaibench.methods import Explainer
from xaibench.registry import register_method


@register_method("test.nan")
class NaNExplainer(Explainer):
    """Returns NaN everywhere (a broken explainer)."""

    needs_gradients = False

    def attribute(self, inputs, target, generator=None):
        return torch.full((inputs.shape[0], self.model.n_patches), float("nan"))
'''


@pytest.mark.slow
def test_run_end_to_end_writes_tables_figures_manifest(tmp_path, tiny_config, capsys, monkeypatch, run_cli):
    monkeypatch.setattr(engine_plan, "BASELINE_MODELS", ["segm", "ofa"])  # Table 1 path without slow ResNets
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--seeds", "0,1", "--train-baselines") == 0
    printed = capsys.readouterr().out
    assert "| OFA |" in printed and "Synthetic SRG" in printed

    for stem in ("table2", "plausibility", "cost", "table1"):
        for suffix in ("csv", "tex", "md"):
            assert (out / f"{stem}.{suffix}").stat().st_size > 0, f"{stem}.{suffix}"
    for name in ("maps_synthetic", "curves"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"

    table = pd.read_csv(out / "table2.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["OFA", "Grad", "Attn"]
    assert list(table.columns) == [("Synthetic", "SRG"), ("Synthetic", "R-SRG")]
    # two seeds: mean ± std, then the bootstrap interval over images
    assert all(re.fullmatch(r"-?\d+\.\d\d ± \d+\.\d\d \[-?\d+\.\d\d, -?\d+\.\d\d\]", cell)
               for cell in table.to_numpy().ravel())
    latex = (out / "table2.tex").read_text()
    assert "\\toprule" in latex and "$\\pm$" in latex and "[" not in latex.split("\\midrule")[1]  # no intervals
    ci = pd.read_csv(out / "ci.csv")
    assert set(ci["seed"].astype(str)) == {"0", "1", "all"} and (ci["ci_low"] <= ci["ci_high"]).all()

    scores = pd.read_csv(out / "scores_long.csv")
    assert list(scores.columns) == ["dataset", "seed", "method", "image", "label", "target", "metric", "value"]
    # one row per dataset, method, seed, image, score: srg (srg mrg lrg insertion deletion) + rsrg + plausibility
    assert len(scores) == 1 * 3 * 2 * 8 * 7
    assert set(scores["metric"]) == {"srg", "mrg", "lrg", "insertion", "deletion", "rsrg", "plausibility"}
    assert (scores["label"] == scores["target"]).all()  # the ground-truth class by default

    tests = pd.read_csv(out / "wilcoxon.csv")
    assert set(zip(tests["method_a"], tests["method_b"])) == {("ofa", "grad"), ("ofa", "attn"), ("grad", "attn")}
    pooled = tests["seed"].astype(str) == "all"  # per seed: the 8 images; pooled: 2 seeds x 8 images
    assert set(tests["seed"].astype(str)) == {"0", "1", "all"}
    assert (tests.loc[pooled, "n"] == 16).all() and (tests.loc[~pooled, "n"] == 8).all()
    assert tests["p_value"].between(0, 1).all()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["seeds"] == [0, 1] and manifest["options"]["n_test"] == 8
    assert manifest["train_config"]["synthetic"]["steps"] == 6 and manifest["device"] == "cpu"
    # per seed: train ofa, 3 explain, 3 x 4 score; Table 1: train segm and evaluate segm, ofa (ofa's training
    # is the run's own, planned once)
    assert manifest["n_units"] == 2 * (1 + 3 * 4) + 2 * (1 + 2) and manifest["failures"] == []
    assert "score synthetic/seed1/attn/plausibility" in manifest["units"]
    assert {"git_commit", "torch", "timm", "config", "timings_s"} <= set(manifest)

    # the same seed in a folder that shares nothing but the config: the same CSVs, byte for byte
    again = tmp_path / "again"
    assert run_cli(tiny_config, again, tmp_path / "cache-again", "--seeds", "0,1", "--no-figures") == 0
    for name in ("table2.csv", "scores_long.csv", "plausibility.csv", "wilcoxon.csv", "summary.csv", "ci.csv"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    assert not (again / "figures").exists()


def _units(cache: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in (cache / "units").rglob("*.pt")}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_table(tmp_path, tiny_config):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "xaibench.cli", "run", "--config", str(tiny_config), "--size", "16",
               "--n-test", "24", "--curve-points", "all", "--quiet"]

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(command + ["--out", str(tmp_path / name), "--cache", str(tmp_path / f"cache-{name}")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    reference = start("reference")
    assert reference.wait(timeout=300) == 0

    killed = start("killed")
    for line in killed.stderr:  # the log, one line per finished unit, goes to stderr (--quiet: no bars)
        if line.startswith("score synthetic/seed0/ofa/rsrg: done"):
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "table2.csv").exists()
    finished = _units(tmp_path / "cache-killed")
    assert len(finished) >= 3  # explain ofa, score ofa/srg, score ofa/rsrg

    resumed = subprocess.run(command + ["--out", str(tmp_path / "killed"), "--cache", str(tmp_path / "cache-killed")],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for unit in ("train synthetic/seed0/ofa", "explain synthetic/seed0/ofa", "score synthetic/seed0/ofa/srg",
                 "score synthetic/seed0/ofa/rsrg"):
        assert f"{unit}: cached" in resumed.stderr  # the log goes to stderr, the table alone to stdout
    assert "explain synthetic/seed0/attn: done" in resumed.stderr
    assert resumed.stdout.lstrip().startswith("| Method |")
    after = _units(tmp_path / "cache-killed")
    assert all(after[path] == mtime for path, mtime in finished.items())  # not recomputed, not rewritten
    assert len(after) > len(finished)
    for name in ("table2.csv", "scores_long.csv"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    assert not list((tmp_path / "cache-killed" / "checkpoints").glob("*.partial"))


def test_unknown_names_exit_2_with_the_valid_ones(tmp_path, capsys):
    assert main(["run", "--methods", "ofa,shap", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'shap'" in err and "grad" in err and "captum.Lime" in err
    assert main(["run", "--datasets", "synthetic,chestmnist", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'chestmnist'" in err and "pneumoniamnist" in err
    assert main(["run", "--set", "run.n_tests=3", "--out", str(tmp_path)]) == 2
    assert "unknown run option(s) n_tests" in capsys.readouterr().err
    assert main(["run", "--set", "stepz=3", "--out", str(tmp_path)]) == 2
    assert "unknown training option(s) stepz" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # all checked before any work


def test_unreadable_config_exits_2(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("[run\nn_test = 3\n")
    assert main(["run", "--config", str(broken), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is not valid TOML" in err and len(err.strip().splitlines()) == 1


def test_plugin_that_raises_at_import_exits_2_naming_it(tmp_path, capsys):
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text("raise RuntimeError('no GPU driver here')\n")
    assert main(["run", "--plugins", str(plugin), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "broken_plugin.py failed to load: RuntimeError: no GPU driver here" in err


@pytest.mark.slow
def test_keep_going_reports_the_failing_unit_and_finishes_the_others(tmp_path, tiny_config, capsys, run_cli):
    plugin = tmp_path / "nan_plugin.py"
    plugin.write_text(NAN_PLUGIN)
    cache = tmp_path / "cache"
    extra = ["--methods", "ofa,test.nan,grad", "--plugins", str(plugin), "--no-figures"]
    assert run_cli(tiny_config, tmp_path / "stop", cache, *extra) == 2  # without --keep-going: the probe stops it
    err = capsys.readouterr().err
    assert "method 'test.nan' fails on a probe before any training" in err and "ExplainerOutputError" in err
    assert "non-finite" in err and len(err.strip().splitlines()) == 1
    assert not (cache / "checkpoints").exists()  # stopped before any training

    out = tmp_path / "keep"
    assert run_cli(tiny_config, out, cache, *extra, "--keep-going") == 1
    captured = capsys.readouterr()
    assert "explain synthetic/seed0/test.nan: FAILED: ExplainerOutputError" in captured.err
    assert "1 unit(s) failed" in captured.err and "explain synthetic/seed0/test.nan" in captured.err
    assert "explain synthetic/seed0/ofa: done" in captured.err
    table = pd.read_csv(out / "table2.csv", header=[0, 1], index_col=0, keep_default_na=False)
    assert list(table.index) == ["OFA", "test.nan", "Grad"]
    assert table.loc["test.nan"].tolist() == ["n/a", "n/a"]
    assert all(float(without_ci(cell)) == float(without_ci(cell))
               for cell in table.loc[["OFA", "Grad"]].to_numpy().ravel())
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["unit"] for f in manifest["failures"]] == ["explain synthetic/seed0/test.nan"]


def test_predicted_target_and_metric_choice(tmp_path, tiny_config, capsys, run_cli):
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--methods", "ofa", "--no-figures") == 0
    assert (out / "plausibility.csv").exists()
    (out / "notes.txt").write_text("mine")
    # the rerun into the same folder drops what it no longer writes (plausibility), and only that
    assert run_cli(tiny_config, out, tmp_path / "cache", "--target", "predicted", "--methods", "ofa",
                   "--set", 'run.metrics=["srg"]', "--no-figures") == 0
    scores = pd.read_csv(out / "scores_long.csv")
    assert set(scores["metric"]) == {"srg", "mrg", "lrg", "insertion", "deletion"}
    assert (scores["target"] != scores["label"]).any()  # a 6-step network is often wrong: its own class is explained
    assert not (out / "plausibility.csv").exists() and not (out / "plausibility.tex").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "manifest.json").read_text())["options"]["target"] == "predicted"


def _long_frame() -> pd.DataFrame:
    """Hand-made per-image scores: 2 datasets x 3 methods x 2 seeds x 4 images; 'b' misses dataset d2."""
    rows = []
    per_seed = {("a", 0): 0.30, ("a", 1): 0.34, ("b", 0): 0.10, ("b", 1): 0.12, ("c", 0): -0.00001,
                ("c", 1): 0.00001}
    for dataset in ("d1", "d2"):
        for (method, seed), mean in per_seed.items():
            if method == "b" and dataset == "d2":
                continue
            for image, offset in enumerate((-0.01, 0.01, -0.02, 0.02)):
                for metric in ("srg", "rsrg"):
                    value = mean + offset if metric == "srg" else mean / 2 + offset
                    rows.append({"dataset": dataset, "seed": seed, "method": method, "image": image,
                                 "metric": metric, "value": value})
                if dataset == "d1":
                    rows.append({"dataset": dataset, "seed": seed, "method": method, "image": image,
                                 "metric": "plausibility", "value": np.nan if image == 0 else 0.5 + mean})
    return pd.DataFrame(rows)


def test_table2_layout_bold_best_and_spread():
    scores = _long_frame()
    table = table2(scores, methods=["a", "b", "c"], datasets=["d1", "d2"])
    assert list(table.columns) == [("d1", "SRG"), ("d1", "R-SRG"), ("d2", "SRG"), ("d2", "R-SRG")]
    # mean ± std of seed means, then the bootstrap interval over images (seeded: the same every run)
    assert table.loc["a", ("d1", "SRG")] == f"32.00 ± {np.std([30, 34], ddof=1):.2f} [30.87, 33.13]"
    assert without_ci(table.loc["b", ("d1", "R-SRG")]) == f"5.50 ± {np.std([5, 6], ddof=1):.2f}"
    assert table.loc["c", ("d1", "SRG")] == "0.00 ± 0.00 [-1.12, 1.13]"  # never '-0.00'
    assert table.loc["b", ("d2", "SRG")] == "n/a"
    latex = to_latex(table, "caption", "tab:t2")
    assert latex.count("\\textbf{") == 4  # one best per column, 'a' everywhere
    assert "a & \\textbf{32.00 $\\pm$ 2.83}" in latex and "n/a" in latex
    single = table2(scores[scores["seed"] == 0], methods=["a", "b", "c"])
    assert single.loc["a", ("d1", "SRG")] == "30.00 [28.50, 31.50]"  # one seed: no spread

    plausibility = plausibility_table(scores, methods=["a", "b", "c"], datasets=["d1", "d2"])
    assert list(plausibility.columns) == [("d1", "Plaus")]  # only where ground truth exists
    # NaN image left out; every image of a seed scores the same, so resampling images moves nothing
    assert plausibility.loc["a", ("d1", "Plaus")] == "82.00 ± 2.83 [82.00, 82.00]"


def test_wilcoxon_pairs_images_and_adjusts():
    tests = wilcoxon_tests(_long_frame(), metrics=("srg",), methods=["a", "b", "c"])
    assert list(tests[tests["dataset"] == "d1"]["seed"]) == [0, 0, 0, 1, 1, 1, "all", "all", "all"]
    per_seed = tests[(tests["dataset"] == "d1") & (tests["seed"] == 0)]
    assert (per_seed["n"] == 4).all()  # one seed: paired by image
    d1 = tests[(tests["dataset"] == "d1") & (tests["seed"] == "all")].set_index(["method_a", "method_b"])
    assert list(d1.index) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert (d1["n"] == 8).all()  # pooled: paired by (seed, image)
    assert d1.loc[("a", "b"), "mean_diff_x100"] == pytest.approx(21.0)
    assert d1.loc[("a", "b"), "p_value"] < 0.01 and (d1["p_holm"] >= d1["p_value"]).all()
    d2 = tests[(tests["dataset"] == "d2") & (tests["seed"] == "all")]
    assert list(zip(d2["method_a"], d2["method_b"])) == [("a", "c")]  # 'b' has no d2 scores


def test_run_config_layers():
    config, overrides = run_config({"run": {"n_test": 5}, "train": {"steps": 9}},
                                   {"n_test": 7, "methods": None},
                                   {"run.n_draws": 3, "data.synthetic.n_samples": 40, "lr": 0.1, "train.steps": 4})
    assert config["run"]["n_test"] == 7 and config["run"]["n_draws"] == 3  # flags and --set beat the file
    assert config["run"]["methods"] == ["ofa", "grad", "attn"]  # untouched keys keep DEFAULT_RUN's values
    assert config["data"]["synthetic"]["n_samples"] == 40
    assert config["train"]["steps"] == 9 and overrides == {"lr": 0.1, "steps": 4}
    options = RunOptions.from_dict({**config["run"], "curve_points": "all", "seeds": "3,1"})
    assert options.curve_points is None and options.seeds == [3, 1]
    assert options.metric_options_for("rsrg") == {"steps": None, "batch_size": "auto", "n_draws": 3}
    assert options.metric_options_for("plausibility") == {}
    with pytest.raises(XaibenchError, match="n_test must be an integer >= 1"):
        RunOptions.from_dict({**config["run"], "n_test": 0})


@pytest.mark.slow
def test_readme_plugin_example_runs_through_xaibench_run(tmp_path, tiny_config):
    """The README's "Write your own explainer" file, end to end through `xaibench run --plugins`."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- begin: my_explainer.py -->\s*```python\n(.*?)```", text, re.S)
    plugin = tmp_path / "my_explainer.py"
    plugin.write_text(block.group(1))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "xaibench.cli", "run", "--methods", "ofa,my.edges",
                             "--plugins", str(plugin), "--config", str(tiny_config), "--size", "16", "--out", str(out),
                             "--cache", str(tmp_path / "cache"), "--quiet", "--no-figures"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    scores = pd.read_csv(out / "scores_long.csv")
    assert set(scores["method"]) == {"ofa", "my.edges"}
    assert (out / "table2.md").read_text().count("|") > 10


def test_method_fingerprint_covers_the_engine_code_it_runs():
    import inspect

    from xaibench.cache import _ENGINE_FILES, _files_hash, code_fingerprint
    from xaibench.registry import METHODS

    assert {"sampling.py", "ofa.py", "vit.py"} <= {path.name for path in _ENGINE_FILES}
    own = tuple(sorted(Path(inspect.getsourcefile(METHODS.get("grad"))).parent.glob("*.py")))
    assert code_fingerprint(METHODS.get("grad")) == _files_hash(own + _ENGINE_FILES) != _files_hash(own)


def test_a_score_given_by_two_metrics_is_kept_once(tmp_path, tiny_config, run_cli):
    out = tmp_path / "out"
    assert run_cli(tiny_config, out, tmp_path / "cache", "--no-figures",
                   "--set", "run.metrics=[\"srg\", \"insertion\"]") == 0
    scores = pd.read_csv(out / "scores_long.csv")
    assert {"srg", "insertion", "deletion"} <= set(scores["metric"])
    per_image = scores[scores["metric"] == "insertion"].groupby(["method", "seed", "image"]).size()
    assert len(per_image) and (per_image == 1).all()


PLUGIN_MODEL = '''
import torch
from torch import nn
from xaibench.models import MaskedClassifier
from xaibench.registry import register_model


@register_model("test.patchnet")
class PatchNet(MaskedClassifier):
    """A linear model over mean patch intensities; removed patches read 0."""

    family = "other"

    def __init__(self, num_classes, in_chans=1, img_size=16, patch_size=None, width: int = 8, **unused):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        self.body = nn.Sequential(nn.Linear(self.n_patches * in_chans, width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x, keep_mask=None):
        p = self.patch_size
        patches = nn.functional.avg_pool2d(x, p)  # [B, C, g, g]
        if keep_mask is not None:
            patches = patches * keep_mask.view(-1, 1, self.grid_size, self.grid_size).to(patches.dtype)
        return self.body(patches.flatten(1))
'''


def test_a_plugin_model_trains_and_is_explained_with_no_engine_edit(tmp_path, tiny_config, capsys):
    plugin = tmp_path / "patchnet.py"
    plugin.write_text(PLUGIN_MODEL)
    cache, train_out = tmp_path / "cache", tmp_path / "train"
    assert main(["train", "--models", "test.patchnet", "--datasets", "synthetic", "--plugins", str(plugin),
                 "--config", str(tiny_config), "--size", "16", "--set", "model_options={\"width\": 4}",
                 "--out", str(train_out), "--cache", str(cache), "--quiet"]) == 0
    assert "test.patchnet" in (train_out / "table1.csv").read_text()
    assert main(["train", "--models", "test.patchnet", "--datasets", "synthetic", "--plugins", str(plugin),
                 "--config", str(tiny_config), "--size", "16", "--set", "model_options={\"width\": 4}",
                 "--out", str(train_out), "--cache", str(cache), "--dry-run"]) == 0
    assert "cached  train synthetic/seed0/test.patchnet" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["run", "--model", "test.patchnet", "--methods", "grad,random,attn", "--plugins", str(plugin),
                 "--config", str(tiny_config), "--size", "16", "--set", "model_options={\"width\": 4}",
                 "--out", str(out), "--cache", str(cache), "--quiet", "--no-figures"]) == 0
    assert "train synthetic/seed0/test.patchnet: cached" in capsys.readouterr().err
    table = pd.read_csv(out / "table2.csv", header=[0, 1], index_col=0, keep_default_na=False)
    assert table.loc["Attn"].tolist() == ["n/a", "n/a"]  # attention maps need a ViT: n/a, not a failure
    assert all(float(without_ci(cell)) == float(without_ci(cell))
               for cell in table.loc[["Grad", "Random"]].to_numpy().ravel())
    assert "n/a" in (out / "table2.md").read_text() and "ViT" in (out / "table2.md").read_text()


def test_a_users_torchvision_classifier_is_scored_from_its_checkpoint_without_training(tmp_path, tiny_config):
    torchvision = pytest.importorskip("torchvision")
    import torch

    network = torchvision.models.resnet18(num_classes=3)  # the synthetic set's 3 classes
    weights = tmp_path / "resnet18.pt"
    torch.save(network.state_dict(), weights)
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["run", "--model", "torchvision:resnet18", "--checkpoint", str(weights), "--methods", "grad,attn",
                 "--config", str(tiny_config), "--size", "16", "--set", "model.mean=[0.5]", "--set", "model.std=[0.25]",
                 "--out", str(out), "--cache", str(cache), "--quiet", "--save-attributions"]) == 0
    assert not (cache / "checkpoints").exists()  # nothing was trained
    table = pd.read_csv(out / "table2.csv", header=[0, 1], index_col=0, keep_default_na=False)
    assert table.loc["Attn"].tolist() == ["n/a", "n/a"]
    float(without_ci(table.loc["Grad", ("Synthetic", "SRG")]))
    from safetensors import safe_open

    with safe_open(str(out / "attributions" / "synthetic_seed0_grad.safetensors"), "pt") as saved:
        assert saved.metadata() == {"dataset": "synthetic", "seed": "0", "method": "grad"}
        assert saved.get_tensor("attributions").shape == (8, 16)
        assert saved.get_tensor("image").tolist() == list(range(8))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["model"] == "torchvision:resnet18" and "load synthetic/seed0/torchvision:resnet18" in \
        manifest["units"]
