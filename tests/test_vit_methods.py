"""The ViT explainers and the optional families: rollout, chefer_gae, legrad, clrp, zennit.lrp, gradcam.*, rise.

Each is tested for a property it must have (rollout rows sum to one, LRP conserves relevance, RISE is seeded,
a CAM finds the one patch a model reads), not only for its shape. Tests of an optional family skip, naming the
extra, where its package is not installed.
"""
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xaibench.errors import NotApplicable, XaibenchError
from xaibench.methods import create_method, list_methods, optional, run_explainer, unsuited_reason
from xaibench.methods.attention_family import attention_rollout, record_attention
from xaibench.methods.cam_family import CAM_TABLE, tokens_to_grid
from xaibench.models import MaskedClassifier, create_model

TINY = dict(num_classes=3, in_chans=1, img_size=16, patch_size=4, arch="tiny", depth=2, embed_dim=32, num_heads=2)
N = 16  # patches of the tiny models
HAS_ZENNIT = importlib.util.find_spec("zennit") is not None
HAS_GRADCAM = importlib.util.find_spec("pytorch_grad_cam") is not None
needs_lrp = pytest.mark.skipif(not HAS_ZENNIT, reason="needs the lrp extra: pip install 'xaibench[lrp]' (zennit)")
needs_cam = pytest.mark.skipif(not HAS_GRADCAM, reason="needs the cam extra: pip install 'xaibench[cam]' (grad-cam)")
CAMS = [row.registered_name for row in CAM_TABLE]
FAST = {"rise": dict(n_masks=32), "gradcam.ScoreCAM": dict(batch_size=128),
        "gradcam.AblationCAM": dict(batch_size=128)}
# (method, tiny model) pairs the methods suit; the optional ones are marked with their extra
SUITED = ([(m, model) for m in ("rollout", "chefer_gae", "clrp", "rise") for model in ("vit", "ofa")]
          + [("legrad", "vit"), ("rise", "resnet18"), pytest.param("zennit.lrp", "resnet18", marks=needs_lrp)]
          + [pytest.param(cam, model, marks=needs_cam) for cam in CAMS for model in ("vit", "ofa", "resnet18")])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name="vit", seed=0):
    torch.manual_seed(seed)
    return create_model(name, **TINY).eval()


def batch(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 16, 16, generator=g), torch.arange(b).remainder(3)


def seeded(seed=7):
    return torch.Generator().manual_seed(seed)


def test_the_new_methods_are_listed():
    assert {"rollout", "chefer_gae", "legrad", "clrp", "zennit.lrp", "rise", *CAMS} <= set(list_methods())


@pytest.mark.parametrize("name, model_name", SUITED)
def test_every_new_method_gives_finite_patch_scores_and_leaves_the_model_as_it_was(name, model_name):
    model = tiny(model_name)
    x, y = batch()
    with torch.no_grad():
        before = model(x)
    options = dict(FAST.get(name, {}))
    if (name, model_name) == ("gradcam.AblationCAM", "resnet18"):
        options["output"] = "logit"  # untrained: no channel's ablation lowers the probability, the map is all 0
    explanation = run_explainer(create_method(name, model, **options), x, y, generator=seeded())
    scores = explanation.attributions
    assert scores.shape == (2, N) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert scores.abs().sum() > 0 and explanation.n_forward >= 1
    assert not any("forward" in vars(m) for m in model.modules())  # no patched forward left behind
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())
    assert F.normalize.__module__ == "torch.nn.functional"
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_methods_that_do_not_suit_a_model_say_why():
    resnet, ofa = tiny("resnet18"), tiny("ofa")
    for name in ("rollout", "chefer_gae", "legrad", "clrp"):
        assert unsuited_reason(name, resnet) == f"{name} needs a ViT-family model (model family: cnn)"
    assert unsuited_reason("zennit.lrp", ofa) == "zennit.lrp needs a CNN-family model (model family: vit)"
    with pytest.raises(NotApplicable, match="legrad needs a ViT whose head reads the class token"):
        create_method("legrad", ofa)  # a NotApplicable: a run shows the cell as n/a with this reason
    with pytest.raises(XaibenchError, match="no option 'n_mask'"):
        create_method("rise", ofa, n_mask=3)


@pytest.mark.parametrize("name, package, extra", [("zennit.lrp", "zennit", "lrp"),
                                                   ("gradcam.LayerCAM", "pytorch_grad_cam", "cam")])
def test_a_missing_extra_makes_the_method_na_with_its_install_line(monkeypatch, name, package, extra):
    model = tiny("resnet18")
    monkeypatch.setattr(optional, "available", lambda wanted: wanted != package)
    with pytest.raises(NotApplicable) as refused:
        create_method(name, model)
    assert isinstance(refused.value, XaibenchError)  # one line (exit code 2) outside a run
    assert str(refused.value) == (f"{name} needs the optional package {optional.DISTRIBUTIONS[package]} "
                                  f"(pip install 'xaibench[{extra}]')")
    assert optional.summary("doc", package) == f"[not installed: pip install 'xaibench[{extra}]'] doc"


# -- attention family ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["vit", "ofa"])
def test_explicit_attention_computes_what_the_model_computes(model_name):
    model = tiny(model_name)
    x, _ = batch()
    with torch.no_grad():
        logits, maps = record_attention(model, x)
        assert torch.allclose(logits, model(x), atol=1e-5)
        assert torch.allclose(maps[-1], model.last_block_attention(x), atol=1e-6)
    assert len(maps) == TINY["depth"] and maps[0].shape == (2, 2, 5 + N, 5 + N)


def test_rollout_rows_sum_to_one_and_the_score_is_the_class_token_row():
    model = tiny("vit")
    x, y = batch()
    with torch.no_grad():
        _, maps = record_attention(model, x)
    rollout = attention_rollout(maps)
    assert torch.allclose(rollout.sum(dim=-1), torch.ones(2, 5 + N), atol=1e-5) and (rollout >= 0).all()
    one_block = attention_rollout(maps[:1])  # one block: the head mean halved, plus half the identity
    assert torch.allclose(one_block, 0.5 * maps[0].mean(dim=1) + 0.5 * torch.eye(5 + N), atol=1e-6)
    scores = run_explainer(create_method("rollout", model), x, y).attributions
    assert torch.allclose(scores, rollout[:, 0, 5:], atol=1e-6)


def test_gae_and_legrad_are_nonnegative_and_depend_on_the_target_class():
    model = tiny("vit")
    x, _ = batch()
    for name in ("chefer_gae", "legrad"):
        explainer = create_method(name, model)
        first = run_explainer(explainer, x, torch.tensor([0, 0])).attributions
        second = run_explainer(explainer, x, torch.tensor([1, 1])).attributions
        assert (first >= 0).all() and not torch.allclose(first, second), name


# -- relevance propagation -------------------------------------------------------------------------------------


def _target_logit(model, x, y):
    with torch.no_grad():
        return model(x).gather(1, y[:, None])[:, 0]


def test_clrp_conserves_relevance_where_nothing_absorbs_it():
    """With every bias, LayerNorm shift, position embedding and prefix token zero, the patch relevances add up to
    the target logit (tolerance 1e-4 relative); with them, what they absorb is the difference."""
    model = tiny("vit")
    x, y = batch(b=3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or any(part in name for part in ("pos_embed", "cls_token", "reg_token")):
                parameter.zero_()
    relevance = run_explainer(create_method("clrp", model), x, y).attributions
    logit = _target_logit(model, x, y)
    assert logit.abs().min() > 1e-3
    assert torch.allclose(relevance.sum(dim=1), logit, rtol=1e-4, atol=1e-6)


@needs_lrp
def test_zennit_lrp_conserves_relevance_where_no_bias_absorbs_it():
    """On a ResNet whose classifier has no bias, the input relevance adds up to the target logit (tolerance 1e-3
    relative: the epsilon and z+ stabilisers, 1e-6, absorb the rest; batch norms are merged, their shifts ignored
    by z+ and the flat first-layer rule)."""
    model = tiny("resnet18")
    x, y = batch(b=3)
    with torch.no_grad():
        model.net.fc.bias.zero_()
    relevance = run_explainer(create_method("zennit.lrp", model), x, y).attributions
    logit = _target_logit(model, x, y)
    assert torch.allclose(relevance.sum(dim=1), logit, rtol=1e-3, atol=1e-6)
    other = run_explainer(create_method("zennit.lrp", model, composite="epsilon_alpha2_beta1_flat"), x, y).attributions
    assert not torch.allclose(relevance, other)  # the composite is the one asked for


# -- RISE --------------------------------------------------------------------------------------------------------


class AdditiveModel(MaskedClassifier):
    """logit_c = sum over kept patches i of w[c, i] * mean(pixels of patch i)."""

    def __init__(self, weights: torch.Tensor):
        super().__init__(16, 4, in_chans=1, num_classes=weights.shape[0])
        self.patch_mean = nn.AvgPool2d(4)
        self.register_buffer("weights", weights)

    def forward(self, x, keep_mask=None):
        means = self.patch_mean(x.mean(dim=1, keepdim=True)).flatten(1)
        return (means if keep_mask is None else means * keep_mask) @ self.weights.t()


def test_rise_is_seeded_and_finds_the_patch_that_matters():
    weights = torch.zeros(2, N)
    weights[1, 9] = 6.0
    model = AdditiveModel(weights).eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    y = torch.ones(3, dtype=torch.long)
    rise = create_method("rise", model, n_masks=64, batch_size=50)  # a batch size that does not divide the rows
    first, again = run_explainer(rise, x, y, generator=seeded(1)), run_explainer(rise, x, y, generator=seeded(1))
    other = run_explainer(rise, x, y, generator=seeded(2))
    assert torch.equal(first.attributions, again.attributions)
    assert not torch.equal(first.attributions, other.attributions)
    assert (first.attributions.argmax(dim=1) == 9).all()
    assert first.n_forward == 64 and first.n_backward == 0


# -- CAMs --------------------------------------------------------------------------------------------------------


class OnePatchCNN(MaskedClassifier):
    """A CNN-family model that reads one patch: conv features, one per patch, gated to patch `patch` only."""

    family = "cnn"

    def __init__(self, patch: int):
        super().__init__(16, 4, in_chans=1, num_classes=2)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 4, stride=4, bias=False), nn.ReLU())
        self.gate = nn.Identity()
        gate = torch.zeros(1, 1, 4, 4)
        gate.view(-1)[patch] = 1.0
        self.register_buffer("mask", gate)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[0].weight.uniform_(0.1, 1.0)
            # small weights: the target probability stays away from 1, where its gradient would vanish
            self.head.weight.copy_(torch.tensor([[-1.0] * 4, [1.0, 0.5, 2.0, 1.5]]) * 0.05)
            self.head.bias.zero_()

    def forward(self, x, keep_mask=None):
        if keep_mask is not None:
            x = x * self.keep_to_pixels(keep_mask)
        return self.head(self.gate(self.features(x) * self.mask).sum(dim=(2, 3)))


@needs_cam
@pytest.mark.parametrize("output", ["prob", "logit"])
@pytest.mark.parametrize("name", [n for n in CAMS if n != "gradcam.EigenCAM"])  # Eigen-CAM's sign is arbitrary
def test_a_cam_puts_the_most_mass_on_the_one_patch_the_model_reads(name, output):
    patch = 6  # row 1, column 2: a transposed grid would put it at 9
    model = OnePatchCNN(patch).eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.1
    explainer = create_method(name, model, layer="gate", output=output)
    scores = run_explainer(explainer, x, torch.ones(2, dtype=torch.long)).attributions
    assert (scores.argmax(dim=1) == patch).all(), scores
    assert (scores[:, patch] > 0.5 * scores.sum(dim=1)).all(), scores


def test_vit_tokens_become_the_patch_grid_without_the_prefix_tokens():
    tokens = torch.arange(5 + N, dtype=torch.float32).view(1, -1, 1).expand(1, 5 + N, 3)  # value = token index
    grid = tokens_to_grid(tokens, 4)
    assert grid.shape == (1, 3, 4, 4)
    assert torch.equal(grid[0, 0].flatten(), torch.arange(5, 5 + N, dtype=torch.float32))  # cell i = patch i
