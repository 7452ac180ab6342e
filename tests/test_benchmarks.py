"""The research scripts in experiments/ that docs/training.md draws conclusions from: their estimator, and
that they still import against the current library."""
import importlib.util
from pathlib import Path

import pytest
import torch

from xaibench.models import create_model

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _load(name: str):
    path = EXPERIMENTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["exact_shapley", "masking_validity"])
def test_experiment_scripts_import_and_have_a_main(name):
    assert callable(_load(name).main)


def test_sampled_shapley_is_efficient_and_seeded():
    exact_shapley = _load("exact_shapley")
    torch.manual_seed(0)
    model = create_model("ofa", num_classes=3, in_chans=1, img_size=16, patch_size=4,
                         depth=1, embed_dim=32, num_heads=2).eval()
    x, y = torch.randn(3, 1, 16, 16), torch.tensor([0, 2, 1])
    phi = exact_shapley.sampled_shapley(model, x, y, 6, torch.Generator().manual_seed(0), batch_size=7)
    assert phi.shape == (3, 16)
    with torch.no_grad():  # every permutation's marginal contributions add up to v(N) - v(empty set)
        full = model(x, torch.ones(3, 16, dtype=torch.bool))
        empty = model(x, torch.zeros(3, 16, dtype=torch.bool))
    v = lambda z: z.gather(1, y[:, None]).squeeze(1) - z.mean(1)
    assert torch.allclose(phi.sum(1), v(full) - v(empty), atol=1e-4)
    again = exact_shapley.sampled_shapley(model, x, y, 6, torch.Generator().manual_seed(0), batch_size=7)
    assert torch.equal(phi, again)
    other = exact_shapley.sampled_shapley(model, x, y, 6, torch.Generator().manual_seed(1), batch_size=7)
    assert not torch.allclose(phi, other)


@pytest.mark.slow
def test_the_masking_benchmark_times_each_grouping_rule_it_is_given():
    """bench_training --maskings with drop's rule variants (harness.masked_model): a row per variant, and each
    round's time on stderr as it comes (what survives a timeout)."""
    import subprocess
    import sys

    bench = EXPERIMENTS.parent / "benchmarks" / "bench_training.py"
    done = subprocess.run([sys.executable, str(bench), "--device", "cpu", "--maskings", "token,drop@b1,drop@0.1",
                           "--n-masks", "2", "--img-size", "16", "--patch-size", "4", "--batch-size", "2",
                           "--repeats", "1", "--rounds", "2"], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines()
            if line.startswith("| ") and "ms" not in line]
    assert rows == ["token", "drop@b1", "drop@0.1"]
    assert sum("round " in line for line in done.stderr.splitlines()) == 6


def test_a_masking_variant_sets_the_drop_grouping_rule():
    spec = importlib.util.spec_from_file_location("bench_harness", EXPERIMENTS.parent / "benchmarks" / "harness.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    masked_model = harness.masked_model
    kwargs = dict(img_size=16, patch_size=4, depth=1, embed_dim=32, num_heads=2)
    bucket, cost, plain = (masked_model("ofa", v, **kwargs).encoder for v in ("drop@b1", "drop@0.1", "drop"))
    assert (bucket.masking, bucket.drop_rule, bucket.drop_bucket) == ("drop", "bucket", 1)
    assert (cost.drop_rule, cost.drop_call_share) == ("cost", 0.1)
    assert plain.drop_rule == "auto" and masked_model("vit", "token", **kwargs).masking == "token"
