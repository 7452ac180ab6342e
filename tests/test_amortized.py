"""ViT-Shapley and FastSHAP (methods/amortized.py): efficiency, determinism, recovery of a known additive game,
and an end-to-end run that fits them as cached units and writes their Table 2 rows."""
from __future__ import annotations

import csv

import pytest
import torch

from xaibench.cli import main
from xaibench.data.base import DatasetInfo, ImageDataset
from xaibench.errors import XaibenchError
from xaibench.methods import create_method, run_explainer
from xaibench.models import create_model
from xaibench.models.base import MaskedClassifier
from xaibench.models.vit import MaskableViT

METHODS = ("vit_shapley", "fastshap")
SIZE, PATCH = 16, 4  # 16 patches


class AdditiveToy(MaskedClassifier):
    """A two-class model whose class-1 log-odds is additive over the kept patches: z(S) = sum_{i in S} w_i m_i(x),
    m_i the patch's mean pixel; so its Shapley values are exactly w_i m_i(x) (and v(none) = 0). It carries a
    small random ViT encoder for ViT-Shapley's head to read (the encoder does not enter the logits)."""

    family = "vit"

    def __init__(self):
        super().__init__(SIZE, PATCH, 1, 2)
        self.encoder = MaskableViT(img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=1, num_heads=2)
        self.register_buffer("w", torch.linspace(-0.3, 0.3, self.n_patches)[torch.randperm(
            self.n_patches, generator=torch.Generator().manual_seed(1))])

    def truth(self, x):
        return self.w * self.pixels_mean(x)

    def pixels_mean(self, x):
        return torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), PATCH).flatten(1)

    def forward(self, x, keep_mask=None):
        contribution = self.truth(x)
        if keep_mask is not None:
            contribution = contribution * keep_mask.float()
        z = contribution.sum(1)
        self.encoder.patch_embed(x)  # a pass through the stem, as every model's forward makes (pass counting)
        return torch.stack([-z / 2, z / 2], dim=1)


def toy_data(n: int, seed: int) -> ImageDataset:
    levels = torch.randint(0, 256, (n, 1, SIZE // PATCH, SIZE // PATCH), generator=torch.Generator().manual_seed(seed))
    images = levels.repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3).to(torch.uint8)  # one level per patch
    return ImageDataset(images, torch.zeros(n, dtype=torch.long), DatasetInfo("toy", "binary-class", 2, 1, SIZE),
                        "train")


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ra, rb = a.argsort(1).argsort(1).float(), b.argsort(1).argsort(1).float()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


@pytest.fixture(scope="module")
def fitted():
    """Each method fitted on the toy game (model as its own surrogate), and the fitted state."""
    torch.manual_seed(0)
    model = AdditiveToy().eval()
    train = toy_data(256, seed=0)
    out = {}
    options = {"vit_shapley": {"lr": 1e-3, "encoder_lr": 1e-3}, "fastshap": {"lr": 3e-3}}  # a random encoder: tuned
    for method in METHODS:
        explainer = create_method(method, model, steps=400, batch_size=16, n_subsets=8, surrogate="model",
                                  **options[method])
        state = explainer.fit(train, torch.Generator().manual_seed(3))
        out[method] = (explainer, state)
    return model, out


@pytest.mark.parametrize("method", METHODS)
def test_fitted_explainer_recovers_a_known_additive_game(fitted, method):
    model, out = fitted
    explainer = out[method][0]
    x, _ = toy_data(32, seed=9).batch()
    explanation = run_explainer(explainer, x, torch.ones(32, dtype=torch.long))
    rho = spearman(explanation.attributions, model.truth(x))
    assert rho.mean() > 0.9, rho
    # class 0's log-odds is -z, so its values are the negatives: efficiency gap and ranks both flip
    other = run_explainer(explainer, x, torch.zeros(32, dtype=torch.long)).attributions
    assert spearman(other, -model.truth(x)).mean() > 0.9


@pytest.mark.parametrize("method", METHODS)
def test_values_sum_to_v_all_minus_v_none_fitted_and_unfitted(fitted, method):
    model, out = fitted
    x, _ = toy_data(8, seed=5).batch()
    targets = torch.tensor([0, 1] * 4)
    for explainer in (out[method][0], create_method(method, model)):  # fitted, and with its initial weights
        attributions = run_explainer(explainer, x, targets).attributions
        p = model.forward_fn(x).gather(1, targets[:, None])[:, 0]
        p_none = model.forward_fn(x, torch.zeros(8, model.n_patches, dtype=torch.bool)).gather(1, targets[:, None])[:, 0]
        logodds = lambda q: torch.log(q) - torch.log1p(-q)  # noqa: E731
        gap = logodds(p) - logodds(p_none)
        torch.testing.assert_close(attributions.sum(1), gap, atol=1e-4, rtol=1e-4)  # float32 sums of 16 values


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_state_and_maps_and_passes_are_counted(method):
    torch.manual_seed(0)
    model = AdditiveToy().eval()
    train, (x, _) = toy_data(64, seed=0), toy_data(4, seed=7).batch()
    states, maps = [], []
    for _ in range(2):
        explainer = create_method(method, model, steps=4, batch_size=4, n_subsets=4, surrogate="model")
        states.append(explainer.fit(train, torch.Generator().manual_seed(11)))
        fresh = create_method(method, model)
        fresh.load_fitted(states[-1])
        explanation = run_explainer(fresh, x, torch.ones(4, dtype=torch.long))
        maps.append(explanation.attributions)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert torch.equal(maps[0], maps[1])
    other = create_method(method, model, steps=4, batch_size=4, n_subsets=4, surrogate="model").fit(train, torch.Generator().manual_seed(12))
    assert any(not torch.equal(states[0][k], other[k]) for k in other)
    # v(all) and v(none) through the model; ViT-Shapley's head also reads the model's encoder (one more pass)
    assert explanation.n_forward == (3.0 if method == "vit_shapley" else 2.0)


def test_a_non_masking_model_gets_a_finetuned_surrogate_stored_in_the_state():
    torch.manual_seed(0)
    model = create_model("vit", num_classes=2, img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=1,
                         num_heads=2).eval()
    explainer = create_method("fastshap", model, steps=2, batch_size=4, n_subsets=2, surrogate_steps=2)
    assert not explainer.uses_model_as_surrogate()  # "auto": a plain ViT was not trained under masking
    state = explainer.fit(toy_data(16, seed=0), torch.Generator().manual_seed(0))
    assert any(k.startswith("surrogate.") for k in state) and any(k.startswith("net.") for k in state)
    fresh = create_method("fastshap", model)
    fresh.load_fitted(state)
    assert not torch.equal(fresh.surrogate.encoder.pos_embed, model.encoder.pos_embed)  # the tuned copy
    x, _ = toy_data(2, seed=3).batch()
    assert run_explainer(fresh, x, torch.ones(2, dtype=torch.long)).n_forward == 2.0  # the surrogate's passes count


@pytest.mark.parametrize("options", [{"steps": 0}, {"value": "logit"}, {"surrogate": "copy"}, {"nope": 1}])
def test_bad_options_are_one_line_errors(options):
    with pytest.raises(XaibenchError, match="option|must"):
        create_method("fastshap", AdditiveToy(), **options)


AMORTIZED_EXTRA = """
[run.method_options.vit_shapley]
steps = 3
batch_size = 4
n_subsets = 2
[run.method_options.fastshap]
steps = 3
batch_size = 4
n_subsets = 2
"""


def test_run_fits_vit_shapley_and_fastshap_and_writes_their_table2_rows(tmp_path, tiny_run):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_run + AMORTIZED_EXTRA)
    out = tmp_path / "out"
    code = main(["run", "--config", str(config), "--size", "16", "--out", str(out), "--cache", str(tmp_path / "c"),
                 "--quiet", "--threads", "1", "--methods", "ofa,vit_shapley,fastshap"])
    assert code == 0
    rows = list(csv.DictReader((out / "table2.csv").open()))
    text = (out / "table2.csv").read_text()
    assert "vit_shapley" in text and "fastshap" in text, text
    manifest = (out / "manifest.json").read_text()
    assert "fit synthetic/seed0/vit_shapley" in manifest and "fit synthetic/seed0/fastshap" in manifest
    assert rows


def test_the_trainer_marks_which_networks_were_trained_under_masking(tmp_path):
    from xaibench.training import DataSpec, TrainConfig, train_model
    from xaibench.training.trainer import load_trained

    config = TrainConfig.from_dict({"steps": 2, "batch_size": 8, "eval_every": 2, "init_steps": 1, "n_masks": 2,
                                    "model_options": {"depth": 1, "embed_dim": 32, "num_heads": 2}})
    data = DataSpec("synthetic", 16, None, {"n_samples": 48})
    ofa = train_model("ofa", data, config, 0, "cpu", tmp_path, progress=False)
    segm = train_model("segm", data, config.replace(steps=1), 0, "cpu", tmp_path, progress=False)
    assert ofa.model.trained_masked and not segm.model.trained_masked
    assert load_trained(ofa.path).model.trained_masked and not load_trained(segm.path).model.trained_masked
