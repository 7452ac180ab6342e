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


@pytest.mark.parametrize("name", ["recipe_sweep", "exact_shapley", "masking_validity"])
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
