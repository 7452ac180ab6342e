"""Parallel execution of the plan: the same tables from every backend and number of workers, one computation per
unit when processes share a cache, and clear errors for bad execution options."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xaibench.cli import main
from xaibench.engine.backends import ExecutionConfig, closure, waves
from xaibench.engine.units import Unit
from xaibench.errors import XaibenchError

REPO = Path(__file__).resolve().parents[1]

RESULTS = ("table2.csv", "scores_long.csv", "curves.csv", "wilcoxon.csv", "ci.csv")

BOOM_PLUGIN = '''
from xaibench.methods import Explainer
from xaibench.registry import register_method


@register_method("test.boom")
class Boom(Explainer):
    """Raises (a broken explainer)."""

    needs_gradients = False

    def attribute(self, inputs, targets, generator=None):
        raise RuntimeError("boom")
'''


def _run(config: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(["run", "--config", str(config), "--size", "16", "--out", str(out), "--cache", str(cache),
                 "--quiet", "--no-figures", "--threads", "1", "--methods", "ofa,grad", *extra])


def test_waves_put_every_dependency_in_an_earlier_wave_and_closure_lists_them_first():
    train = Unit("train", "t", "T")
    explain = Unit("explain", "e", "E", {"model": "T"})
    score = Unit("score", "s", "S", {"model": "T", "explanation": "E"})
    other = Unit("train", "t2", "T2")
    plan = [train, explain, score, other]
    assert [[u.key for u in wave] for wave in waves(plan)] == [["T", "T2"], ["E"], ["S"]]
    assert [u.key for u in closure(score, {u.key: u for u in plan})] == ["T", "E"]


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "spark"}, "unknown backend 'spark'; valid: serial, loky, dask, ray"),
    ({"backend": "loky", "jobs": 0}, "--jobs must be an integer >= 1, got 0"),
    ({"backend": "loky", "scheduler": "tcp://127.0.0.1:8786"}, "needs --backend dask"),
    ({"backend": "serial", "jobs": 2}, "needs a parallel backend"),
])
def test_bad_execution_options_are_named(kwargs, message):
    with pytest.raises(XaibenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExecutionConfig(**kwargs)


def test_bad_execution_flags_exit_2(tmp_path, tiny_config, capsys):
    with pytest.raises(SystemExit) as stop:
        _run(tiny_config, tmp_path / "o", tmp_path / "c", "--backend", "loky", "--jobs", "0")
    assert stop.value.code == 2 and "expected an integer >= 1, got '0'" in capsys.readouterr().err
    assert _run(tiny_config, tmp_path / "o", tmp_path / "c", "--jobs", "2") == 2
    assert "needs a parallel backend" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_loky_and_dask_give_the_serial_tables(tmp_path, tiny_config):
    assert _run(tiny_config, tmp_path / "serial", tmp_path / "c-serial") == 0
    assert _run(tiny_config, tmp_path / "loky", tmp_path / "c-loky", "--backend", "loky", "--jobs", "2") == 0
    assert _run(tiny_config, tmp_path / "dask", tmp_path / "c-dask", "--backend", "dask", "--jobs", "2") == 0
    for name in RESULTS:
        serial = (tmp_path / "serial" / name).read_bytes()
        assert (tmp_path / "loky" / name).read_bytes() == serial, name
        assert (tmp_path / "dask" / name).read_bytes() == serial, name
    manifest = json.loads((tmp_path / "loky" / "manifest.json").read_text())
    assert manifest["execution"]["backend"] == "loky" and manifest["execution"]["jobs"] == 2
    workers = {unit["computed_by"] for unit in manifest["units"].values()}
    assert f"{os.uname().nodename}:{os.getpid()}" not in workers  # the workers computed, not this process
    # a second run on the loky cache computes nothing, whatever the backend
    assert _run(tiny_config, tmp_path / "again", tmp_path / "c-loky") == 0
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert all(unit["cached"] for unit in again["units"].values())
    assert (tmp_path / "again" / "table2.csv").read_bytes() == (tmp_path / "serial" / "table2.csv").read_bytes()


def test_a_failing_unit_in_a_worker_skips_its_dependents(tmp_path, tiny_config, capsys):
    plugin = tmp_path / "boom.py"
    plugin.write_text(BOOM_PLUGIN)
    code = main(["run", "--config", str(tiny_config), "--size", "16", "--out", str(tmp_path / "o"), "--cache",
                 str(tmp_path / "c"), "--quiet", "--no-figures", "--threads", "1", "--methods", "ofa,test.boom",
                 "--plugins", str(plugin), "--backend", "loky", "--jobs", "2", "--keep-going"])
    assert code == 1
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [f["unit"] for f in manifest["failures"]] == ["explain synthetic/seed0/test.boom"]
    assert "RuntimeError: boom" in manifest["failures"][0]["error"]
    assert sorted(manifest["skipped"]) == sorted(f"score synthetic/seed0/test.boom/{m}"
                                                 for m in ("srg", "rsrg", "plausibility"))
    assert "OFA" in (tmp_path / "o" / "table2.md").read_text()


@pytest.mark.slow
def test_two_processes_on_one_cache_compute_each_unit_once(tmp_path, tiny_config):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "xaibench.cli", "run", "--config", str(tiny_config), "--size", "16", "--cache",
               str(tmp_path / "cache"), "--quiet", "--no-figures", "--threads", "1", "--methods", "ofa,grad"]
    runs = [subprocess.Popen(command + ["--out", str(tmp_path / name)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for run in runs:
        assert run.wait(timeout=240) == 0, run.stderr.read()
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("a", "b")]
    assert manifests[0]["units"].keys() == manifests[1]["units"].keys()
    for label in manifests[0]["units"]:
        entries = [manifest["units"][label] for manifest in manifests]
        assert sorted(entry["cached"] for entry in entries) == [False, True], (label, entries)
        assert entries[0]["computed_by"] == entries[1]["computed_by"], (label, entries)
    assert (tmp_path / "a" / "table2.csv").read_bytes() == (tmp_path / "b" / "table2.csv").read_bytes()


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("ray") is None,
                    reason="ray is an optional extra (pip install 'xaibench[ray]')")
def test_ray_gives_the_serial_tables(tmp_path, tiny_config):
    assert _run(tiny_config, tmp_path / "serial", tmp_path / "c1") == 0
    assert _run(tiny_config, tmp_path / "ray", tmp_path / "c2", "--backend", "ray", "--jobs", "2") == 0
    assert (tmp_path / "ray" / "table2.csv").read_bytes() == (tmp_path / "serial" / "table2.csv").read_bytes()


def test_compile_wraps_the_metrics_forward_and_auto_batch_is_256_on_the_cpu():
    import torch

    from xaibench.engine.context import Context
    from xaibench.models import create_model

    torch.manual_seed(0)
    model = create_model("ofa", num_classes=2, in_chans=1, img_size=16, arch="tiny").eval()
    x = torch.randn(3, 1, 16, 16)
    plain, batch = Context(torch.device("cpu"), progress=False).forward(model, x)
    compiled, _ = Context(torch.device("cpu"), progress=False, compile="eager").forward(model, x)
    assert batch == 256 and plain == model.forward_fn and compiled is not plain
    keep = torch.rand(3, model.n_patches, generator=torch.Generator().manual_seed(0)) > 0.5
    with torch.inference_mode():
        assert torch.equal(compiled(x, keep), plain(x, keep))


def test_hand_sharding_then_one_command_assembles_the_tables_from_the_cache(tmp_path, tiny_config):
    shared = tmp_path / "shared-cache"
    assert _run(tiny_config, tmp_path / "shard0", shared, "--seeds", "0") == 0  # "machine" one
    assert _run(tiny_config, tmp_path / "shard1", shared, "--seeds", "1") == 0  # "machine" two
    assert _run(tiny_config, tmp_path / "all", shared, "--seeds", "0,1") == 0  # assembles: nothing computed
    manifest = json.loads((tmp_path / "all" / "manifest.json").read_text())
    assert manifest["n_cached"] == manifest["n_units"] and manifest["n_units"] > 0
    assert _run(tiny_config, tmp_path / "direct", tmp_path / "direct-cache", "--seeds", "0,1") == 0
    for name in RESULTS:
        assert (tmp_path / "all" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name


DDP_TRAIN = """
[train]
steps = 4
batch_size = 8
eval_every = 2
warmup_steps = 1
init_steps = 2
n_masks = 2
[train.model_options]
depth = 1
embed_dim = 32
num_heads = 2
[data.synthetic]
n_samples = 48
"""


@pytest.mark.slow
def test_xaibench_train_under_torchrun_trains_with_ddp_and_rank0_writes_table1(tmp_path):
    config = tmp_path / "ddp.toml"
    config.write_text(DDP_TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "xaibench.cli", "train", "--models", "ofa", "--datasets", "synthetic", "--size",
                           "16", "--config", str(config), "--cache", str(tmp_path / "cache"), "--out",
                           str(tmp_path / "out"), "--quiet"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Table 1 written") == 1  # rank 0 alone reports
    from xaibench.training.checkpoints import read_checkpoint

    checkpoints = sorted((tmp_path / "cache").rglob("ofa-*.safetensors"))
    assert checkpoints
    for path in checkpoints:
        record = read_checkpoint(path).record
        assert record["world_size"] == 2
    assert "OFA" in (tmp_path / "out" / "table1.md").read_text()


FITTED_PLUGIN = '''
import torch
from xaibench.methods import FittedExplainer
from xaibench.registry import register_method


@register_method("test.fitted")
class MeanImportance(FittedExplainer):
    """Amortized toy: learns one score per patch (the mean |x| of the training images), explains with it."""

    needs_gradients = False

    def __init__(self, model):
        super().__init__(model)
        self.weights = torch.zeros(model.n_patches)

    def fit(self, train, generator, progress=False):
        x, _ = train.batch(slice(0, 32))
        pooled = torch.nn.functional.avg_pool2d(x.abs().mean(1, keepdim=True), self.model.patch_size)
        noise = torch.rand(self.model.n_patches, generator=generator, device=generator.device).cpu()
        return {"weights": pooled.mean(0).flatten() + 1e-3 * noise}

    def load_fitted(self, state):
        self.weights = state["weights"]

    def attribute(self, inputs, targets, generator=None):
        return self.weights.to(inputs.device).expand(inputs.shape[0], -1).clone()
'''


def test_an_amortized_explainer_is_fitted_once_as_a_cached_unit_and_explains_with_its_state(tmp_path, tiny_config,
                                                                                          capsys):
    plugin = tmp_path / "fitted.py"
    plugin.write_text(FITTED_PLUGIN)
    args = ["--plugins", str(plugin), "--methods", "ofa,test.fitted"]
    assert _run(tiny_config, tmp_path / "o", tmp_path / "c", *args, "--dry-run") == 0
    assert "fit synthetic/seed0/test.fitted" in capsys.readouterr().out
    assert _run(tiny_config, tmp_path / "o", tmp_path / "c", *args) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["units"]["fit synthetic/seed0/test.fitted"]["cached"] is False
    assert len(list((tmp_path / "c" / "units" / "fit").glob("*.pt"))) == 1
    assert _run(tiny_config, tmp_path / "again", tmp_path / "c", *args) == 0
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert all(unit["cached"] for unit in again["units"].values())
    # in workers, from a fresh cache: the fit unit runs in one, the explain unit loads its state in another
    assert _run(tiny_config, tmp_path / "loky", tmp_path / "c2", *args, "--backend", "loky", "--jobs", "2") == 0
    assert (tmp_path / "loky" / "table2.csv").read_bytes() == (tmp_path / "o" / "table2.csv").read_bytes()


def test_the_truth_and_sanity_units_give_the_serial_tables_on_loky(tmp_path, tiny_config):
    """The objects set's own unit kinds (truth, sanity, the reference's scores) travel through workers: a loky run
    writes the serial run's truth, gates and sanity tables byte for byte."""
    objects = ("--datasets", "objects", "--set", "data.objects.n_samples=48", "--set", "run.sanity_images=2")
    assert _run(tiny_config, tmp_path / "serial", tmp_path / "cache-serial", *objects) == 0
    assert _run(tiny_config, tmp_path / "loky", tmp_path / "cache-loky", *objects, "--backend", "loky",
                "--jobs", "2") == 0
    for name in ("table2.csv", "scores_long.csv", "truth.csv", "gates.csv", "sanity.csv"):
        assert (tmp_path / "loky" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
