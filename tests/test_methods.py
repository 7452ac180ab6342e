"""Explainers: the one interface, the built-ins and Captum wrappers, guards, costs and third-party plugins."""
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from xaibench.cli import main
from xaibench.errors import ExplainerOutputError, XaibenchError
from xaibench.methods import (
    CAPTUM_TABLE,
    CaptumRow,
    Explainer,
    Explanation,
    create_method,
    list_methods,
    register_captum_row,
    run_explainer,
    seeded_global_rng,
    unsuited_reason,
)
from xaibench.methods.captum_family import KINDS
from xaibench.models import MaskedClassifier, create_model
from xaibench.plugins import load_plugins
from xaibench.registry import METHODS, UnknownNameError

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_classes=3, in_chans=1, img_size=16, patch_size=4, arch="tiny", depth=1, embed_dim=32, num_heads=2)
N = 16  # patches of the tiny models
CAPTUM = ["captum.IntegratedGradients", "captum.Saliency", "captum.InputXGradient", "captum.GuidedBackprop",
          "captum.DeepLift", "captum.GradientShap", "captum.SmoothGrad", "captum.Occlusion",
          "captum.FeatureAblation", "captum.ShapleyValueSampling", "captum.KernelShap", "captum.Lime",
          "captum.LayerGradCam"]
BUILTIN = ["ofa", "grad", "attn", "random", *CAPTUM]
# Small sample counts keep the contract test fast; the defaults are exercised by the benchmark.
FAST = {"captum.IntegratedGradients": dict(n_steps=4), "captum.GradientShap": dict(n_samples=4),
        "captum.SmoothGrad": dict(n_samples=4), "captum.ShapleyValueSampling": dict(n_samples=2),
        "captum.KernelShap": dict(n_samples=24), "captum.Lime": dict(n_samples=24)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared two-core machine spin-wait each other; one is faster and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name="ofa", seed=0):
    torch.manual_seed(seed)
    return create_model(name, **TINY).eval()


def batch(b=3, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 16, 16, generator=g).to(device), torch.arange(b).remainder(3).to(device)


def seeded(seed=7, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def test_every_builtin_is_registered():
    assert set(BUILTIN) <= set(list_methods())
    assert list_methods("captum.*") == sorted(CAPTUM)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_contract_shape_device_finite_and_seeded(name):
    model = tiny("ofa")
    x, y = batch()
    explainer = create_method(name, model, **FAST.get(name, {}))
    first = run_explainer(explainer, x, y, generator=seeded())
    torch.manual_seed(123)  # a different global RNG state must not matter: the generator decides
    second = run_explainer(explainer, x, y, generator=seeded())
    assert isinstance(first, Explanation) and first.method == name
    assert first.attributions.shape == (3, N) and first.attributions.dtype == torch.float32
    assert first.attributions.device == x.device
    assert torch.isfinite(first.attributions).all()
    assert torch.equal(first.attributions, second.attributions)
    with torch.set_grad_enabled(explainer.needs_gradients):  # the verb itself gives the same tensor
        assert torch.equal(explainer.attribute(x, y, generator=seeded()), first.attributions)
    assert first.seconds > 0 and first.n_backward >= 0
    assert first.n_forward >= (0 if name == "random" else 1)
    if name != "random":  # a real explanation is not constant
        assert first.attributions.std() > 0


@pytest.mark.parametrize("model_name", ["vit", "resnet18"])
@pytest.mark.parametrize("name", ["grad", "captum.IntegratedGradients", "captum.GuidedBackprop", "captum.DeepLift",
                                  "captum.LayerGradCam", "captum.FeatureAblation", "captum.Occlusion"])
def test_model_agnostic_methods_run_on_vit_and_resnet(model_name, name):
    model = tiny(model_name)
    x, y = batch(b=2)
    options = dict(FAST.get(name, {}))
    if name == "captum.LayerGradCam" and model_name == "resnet18":
        options = dict(layer="net.layer2", relu=False)  # layer4 of a 16 px image is 1 x 1: a constant map
    explanation = run_explainer(create_method(name, model, **options), x, y, generator=seeded())
    assert explanation.attributions.shape == (2, N)
    assert torch.isfinite(explanation.attributions).all() and explanation.attributions.abs().sum() > 0
    # Captum's hooks are gone and inplace activations restored afterwards
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(m.inplace for m in model.modules() if hasattr(m, "inplace") and isinstance(m, nn.ReLU))


def test_model_specific_methods_refuse_other_models():
    with pytest.raises(XaibenchError, match="'ofa' needs an OFA network"):
        create_method("ofa", tiny("vit"))
    with pytest.raises(XaibenchError, match="'attn' needs a ViT"):
        create_method("attn", tiny("resnet18"))
    with pytest.raises(XaibenchError, match="no option 'n_step'.*n_steps"):
        create_method("captum.IntegratedGradients", tiny("ofa"), n_step=3)


# -- properties on a model whose truth is known --------------------------------------------------------------


class AdditiveModel(MaskedClassifier):
    """logit_c = sum over patches i of w[c, i] * mean(pixels of patch i); a removed patch contributes 0."""

    def __init__(self, weights: torch.Tensor, img_size: int = 16, patch_size: int = 4):
        super().__init__(img_size, patch_size, in_chans=1, num_classes=weights.shape[0])
        self.patch_mean = nn.AvgPool2d(patch_size)
        self.register_buffer("weights", weights)

    def forward(self, x, keep_mask=None):
        means = self.patch_mean(x.mean(dim=1, keepdim=True)).flatten(1)  # [B, n]
        if keep_mask is not None:
            means = means * keep_mask
        return means @ self.weights.t()


@pytest.mark.parametrize("name", ["grad", "captum.IntegratedGradients", "captum.FeatureAblation"])
def test_the_truly_important_patch_ranks_first_on_an_additive_model(name):
    g = torch.Generator().manual_seed(3)
    weights = (torch.rand(2, N, generator=g) - 0.5) * 0.4
    important = 9
    weights[1, important] = 6.0
    model = AdditiveModel(weights).eval()
    x = torch.rand(4, 1, 16, 16, generator=g) * 0.3 + 0.05  # positive, target probability far from saturated
    targets = torch.ones(4, dtype=torch.long)
    scores = run_explainer(create_method(name, model), x, targets, generator=seeded()).attributions
    assert (scores.argmax(dim=1) == important).all(), scores


def test_random_is_independent_of_the_input_and_seeded():
    model = tiny("ofa")
    explainer = create_method("random", model)
    (x1, y), (x2, _) = batch(seed=1), batch(seed=2)
    a = run_explainer(explainer, x1, y, generator=seeded(5)).attributions
    b = run_explainer(explainer, x2, y, generator=seeded(5)).attributions
    c = run_explainer(explainer, x1, y, generator=seeded(6)).attributions
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ofa_explanation_is_phi_plus_minus_phi_minus_of_the_target():
    model = tiny("ofa")
    x, y = batch(b=4)
    y = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        phi_plus, phi_minus = model.shapley(x)
    expected = (phi_plus - phi_minus)[torch.arange(4), :, y]
    assert torch.allclose(run_explainer(create_method("ofa", model), x, y).attributions, expected, atol=1e-6)


def test_attn_is_the_class_token_row_averaged_over_heads():
    model = tiny("vit")
    x, y = batch()
    scores = run_explainer(create_method("attn", model), x, y).attributions
    with torch.no_grad():
        attention = model.last_block_attention(x)  # [B, heads, T, T]
    prefix = model.encoder.num_prefix_tokens
    assert torch.allclose(scores, attention[:, :, 0, prefix:].mean(dim=1), atol=1e-6)
    assert not torch.allclose(scores, attention[:, :, 1, prefix:].mean(dim=1), atol=1e-6)  # not a register's row
    assert (scores >= 0).all() and (scores.sum(dim=1) <= 1 + 1e-5).all()


# -- one verb, Captum's keyword, the table ------------------------------------------------------------------


class _Labels(Explainer):
    """Scores = the target class id on every patch; its parameters are not called `target`."""

    needs_gradients = False
    registered_name = "test.labels"

    def attribute(self, images, labels, generator=None):
        return labels.float()[:, None].expand(-1, self.model.n_patches).clone()


@pytest.mark.parametrize("name", ["grad", "random", "captum.Saliency", "captum.KernelShap"])
def test_attribute_takes_captum_s_target_keyword_and_run_explainer_adds_only_the_cost(name):
    model = tiny("ofa")
    x, y = batch()
    explainer = create_method(name, model, **FAST.get(name, {}))
    assert list(inspect.signature(type(explainer).attribute).parameters) == ["self", "inputs", "target", "generator"]
    explained = run_explainer(explainer, x, y, generator=seeded())
    assert torch.equal(run_explainer(explainer, x, target=y, generator=seeded()).attributions, explained.attributions)
    with torch.set_grad_enabled(explainer.needs_gradients):
        assert torch.equal(explainer.attribute(x, target=y, generator=seeded()), explained.attributions)
        assert torch.equal(explainer.attribute(x, y, seeded()), explained.attributions)
    assert not hasattr(explainer, "explain") and not callable(explainer)  # one verb


def test_run_explainer_passes_the_targets_positionally_whatever_attribute_calls_them():
    model = tiny("ofa")
    x, y = batch()
    explainer = _Labels(model)
    expected = y.float()[:, None].expand(-1, N)
    assert torch.equal(explainer.attribute(x, y), expected)
    assert torch.equal(run_explainer(explainer, x, y).attributions, expected)
    assert torch.equal(run_explainer(explainer, x, target=y).attributions, expected)
    with pytest.raises(TypeError):
        run_explainer(explainer, x)


def test_every_builtin_overrides_attribute_and_no_other_hook():
    hooks = {name for name, value in vars(Explainer).items() if callable(value)} - {"__init__"}
    for name in BUILTIN:
        cls = METHODS.get(name)
        overridden = {attr for klass in cls.__mro__[:cls.__mro__.index(Explainer)] for attr in vars(klass)
                      if attr in hooks}
        assert overridden == {"attribute"}, (name, overridden)
        assert isinstance(cls.probes, tuple) and not callable(cls.probes)


def test_every_table_row_is_registered_with_its_kind_options_and_summary(capsys):
    assert sorted(row.registered_name for row in CAPTUM_TABLE) == sorted(CAPTUM)
    model = tiny("ofa")
    assert main(["list", "methods"]) == 0
    listed = capsys.readouterr().out
    for row in CAPTUM_TABLE:
        cls = METHODS.get(row.registered_name)
        assert issubclass(cls, KINDS[row.kind]) and cls.row is row
        assert re.search(rf"^  {re.escape(row.registered_name)} +{re.escape(row.summary)}$", listed, re.M)
        parameters = inspect.signature(cls).parameters
        assert [(p.name, p.default) for p in list(parameters.values())[1:]] == [("output", "prob"),
                                                                               *row.options.items()]
        explainer = create_method(row.registered_name, model)
        assert {option: getattr(explainer, option) for option in row.options if option != "layer"} == \
               {option: default for option, default in row.options.items() if option != "layer"}
        if row.kind == "patch":  # the patch kind passes it to every perturbation call
            assert "perturbations_per_eval" in row.options and cls.needs_gradients is False
    with pytest.raises(XaibenchError, match="'captum.Lime'.*'n_sample'.*valid options: output, n_samples, alpha"):
        METHODS.get("captum.Lime")(model, n_sample=3)
    with pytest.raises(XaibenchError, match="output must be one of prob, logit, got 'logits'"):
        create_method("captum.Saliency", model, output="logits")


def _patch_sums(model, pixels):
    return model.pixels_to_patches(pixels.sum(dim=1))


@pytest.mark.filterwarnings("ignore:You are providing multiple inputs")
def test_table_rows_make_the_captum_call_they_document():
    import captum.attr

    model = tiny("ofa")
    x, y = batch()
    ig = run_explainer(create_method("captum.IntegratedGradients", model, n_steps=5, baseline=0.2,
                                     method="riemann_left", output="logit"), x, y).attributions
    by_hand = captum.attr.IntegratedGradients(model).attribute(x.clone().requires_grad_(True), baselines=0.2, target=y,
                                                               n_steps=5, method="riemann_left")
    assert torch.allclose(ig, _patch_sums(model, by_hand), atol=1e-6)

    def presence_score(presence, images):
        return model.forward_fn(images, presence.reshape(presence.shape[0], -1) > 0.5)

    occlusion = run_explainer(create_method("captum.Occlusion", model, window=3, stride=1), x, y).attributions
    with torch.no_grad():
        by_hand = captum.attr.Occlusion(presence_score).attribute(
            torch.ones(3, 4, 4), sliding_window_shapes=(3, 3), strides=(1, 1), baselines=0.0, target=y,
            additional_forward_args=(x,))
    assert torch.allclose(occlusion, by_hand.reshape(3, N), atol=1e-6)

    kernel = run_explainer(create_method("captum.KernelShap", model, n_samples=20), x, y,
                           generator=seeded(3)).attributions
    with torch.no_grad(), seeded_global_rng(seeded(3), x.device):
        by_hand = captum.attr.KernelShap(presence_score).attribute(
            torch.ones(3, N), baselines=0.0, target=y, additional_forward_args=(x,), n_samples=20,
            perturbations_per_eval=16)
    assert torch.allclose(kernel, by_hand, atol=1e-6)


def test_a_new_row_is_a_new_method(monkeypatch):
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # forget captum.test.* after this test
    row = CaptumRow("test.Saliency", "pixel", "Saliency again, from one row.", algorithm="Saliency", absolute=True,
                    arguments=lambda e, x, g: dict(abs=True))
    cls = register_captum_row(row)
    assert METHODS.get("captum.test.Saliency") is cls and cls.__doc__ == row.summary
    model = tiny("ofa")
    x, y = batch()
    new = run_explainer(create_method("captum.test.Saliency", model), x, y).attributions
    assert torch.equal(new, run_explainer(create_method("captum.Saliency", model), x, y).attributions)
    with pytest.raises(XaibenchError, match="kind must be one of pixel, patch, layer, got 'pixels'"):
        register_captum_row(CaptumRow("test.Bad", "pixels", "a typo"))


# -- which model a method suits ---------------------------------------------------------------------------------


class TinyCNN(MaskedClassifier):
    """A small CNN of the "cnn" family without a ResNet's layer4; a removed patch becomes 0."""

    family = "cnn"

    def __init__(self):
        super().__init__(16, 4, in_chans=1, num_classes=3)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.head = nn.Linear(6, 3)

    def forward(self, x, keep_mask=None):
        if keep_mask is not None:
            x = x * self.keep_to_pixels(keep_mask)
        return self.head(self.features(x).mean(dim=(2, 3)))


def family_of(model, family):
    if getattr(model, "family", None) is None:  # until every model carries one
        model.family = family
    assert model.family == family
    return model


def test_families_are_declared_where_a_method_needs_a_kind_of_model():
    assert METHODS.get("ofa").families == ("vit",) and METHODS.get("attn").families == ("vit",)
    assert METHODS.get("captum.LayerGradCam").families == ("vit", "cnn")
    assert all(METHODS.get(name).families is None for name in BUILTIN
               if name not in ("ofa", "attn", "captum.LayerGradCam"))


def test_unsuited_reason_names_the_method_the_need_and_the_model_family():
    resnet, vit, ofa = family_of(tiny("resnet18"), "cnn"), family_of(tiny("vit"), "vit"), family_of(tiny("ofa"), "vit")
    assert unsuited_reason("attn", resnet) == "attn needs a ViT-family model (model family: cnn)"
    assert unsuited_reason("ofa", resnet) == "ofa needs a ViT-family model (model family: cnn)"
    assert unsuited_reason("ofa", vit) == ("ofa needs an OFA network (ofa or segm); ViTClassifier has no "
                                           "attributions, shapley")
    for name in BUILTIN:
        assert unsuited_reason(name, ofa) is None, name
        assert unsuited_reason(name, resnet) is None or name in ("ofa", "attn"), name
    other = AdditiveModel(torch.zeros(2, N))
    other.family = "other"
    assert unsuited_reason("captum.LayerGradCam", other) == ("captum.LayerGradCam needs a ViT-family or "
                                                             "CNN-family model (model family: other)")
    assert unsuited_reason("captum.LayerGradCam", other, {"layer": "patch_mean"}) is None
    assert unsuited_reason("grad", other) is None and unsuited_reason("captum.Lime", other) is None
    unknown = nn.Linear(2, 2)  # no `family`: unknown, suits only the methods for any model
    assert unsuited_reason("attn", unknown) == "attn needs a ViT-family model (model family: unknown)"
    assert unsuited_reason("random", unknown) is None
    with pytest.raises(UnknownNameError, match="unknown method 'atn'"):
        unsuited_reason("atn", ofa)


def test_grad_cam_finds_a_cnn_layer_by_itself():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x, y = batch()
    explainer = create_method("captum.LayerGradCam", model)
    assert explainer.layer is model.features[2] and explainer.probes == (model.features[2],)
    explanation = run_explainer(explainer, x, y)
    assert explanation.attributions.shape == (3, N)
    assert explanation.attributions.std() > 0 and (explanation.n_forward, explanation.n_backward) == (1, 1)
    with pytest.raises(XaibenchError, match="cannot find a layer in AdditiveModel; pass layer="):
        create_method("captum.LayerGradCam", AdditiveModel(torch.zeros(2, N)))


# -- guards and costs ---------------------------------------------------------------------------------------


class _Returns(Explainer):
    needs_gradients = False
    registered_name = "test.faulty"

    def __init__(self, model, value):
        super().__init__(model)
        self.value = value

    def attribute(self, inputs, target, generator=None):
        return self.value


def test_guards_name_the_method_and_the_offending_shape_or_value():
    model = tiny("ofa")
    x, y = batch(b=2)
    with pytest.raises(ExplainerOutputError, match=r"'test.faulty'.*shape \(2, 5\).*\[2, 16\]"):
        run_explainer(_Returns(model, torch.zeros(2, 5)), x, y)
    bad = torch.zeros(2, N)
    bad[1, 3] = float("nan")
    with pytest.raises(ExplainerOutputError, match=r"'test.faulty'.*1 non-finite.*nan"):
        run_explainer(_Returns(model, bad), x, y)
    with pytest.raises(ExplainerOutputError, match=r"'test.faulty'.*inf"):
        run_explainer(_Returns(model, torch.full((2, N), float("inf"))), x, y)
    with pytest.raises(ExplainerOutputError, match=r"'test.faulty'.*\(2, 16, 16\).*return self.to_patches"):
        run_explainer(_Returns(model, torch.zeros(2, 16, 16)), x, y)  # a pixel map: the patch sums are the method's
    with pytest.raises(ExplainerOutputError, match="'test.faulty' returned list"):
        run_explainer(_Returns(model, [0.0] * N), x, y)
    with pytest.raises(XaibenchError, match="targets must lie in 0..2"):
        run_explainer(_Returns(model, torch.zeros(2, N)), x, torch.tensor([0, 3]))


@pytest.mark.parametrize("name, options, forward, backward", [
    ("ofa", {}, 1, 0),
    ("grad", {}, 1, 1),
    ("attn", {}, 1, 0),
    ("random", {}, 0, 0),
    ("captum.IntegratedGradients", dict(n_steps=5), 5, 5),
    ("captum.FeatureAblation", dict(perturbations_per_eval=4), 1 + N, 0),  # the original plus one per patch
    ("captum.LayerGradCam", {}, 1, 1),
])
def test_pass_counts_are_counted_per_image(name, options, forward, backward):
    x, y = batch(b=3)
    explanation = run_explainer(create_method(name, tiny("ofa"), **options), x, y, generator=seeded())
    assert (explanation.n_forward, explanation.n_backward) == (forward, backward)


def test_captum_randomness_leaves_the_global_rng_alone():
    model = tiny("ofa")
    x, y = batch()
    torch.manual_seed(11)
    before = torch.get_rng_state()
    run_explainer(create_method("captum.SmoothGrad", model, n_samples=2), x, y, generator=seeded())
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.cuda
def test_explainers_on_cuda():
    model = tiny("ofa").cuda()
    x, y = batch(device="cuda")
    for name in ["ofa", "grad", "attn", "random", "captum.IntegratedGradients", "captum.SmoothGrad",
                 "captum.FeatureAblation", "captum.LayerGradCam"]:
        explainer = create_method(name, model, **FAST.get(name, {}))
        first = run_explainer(explainer, x, y, generator=seeded(device="cuda"))
        second = run_explainer(explainer, x, y, generator=seeded(device="cuda"))
        assert first.attributions.device.type == "cuda" and first.attributions.shape == (3, N), name
        assert torch.isfinite(first.attributions).all(), name
        assert torch.allclose(first.attributions, second.attributions, atol=1e-6), name


# -- third-party plugins -------------------------------------------------------------------------------------


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- begin: my_explainer.py -->\s*```python\n(.*?)```\s*<!-- end: my_explainer.py -->",
                      text, re.S)
    assert block, "README.md lost its my_explainer.py example"
    return block.group(1)


def test_readme_plugin_example_runs_through_the_cli_and_explains(tmp_path, monkeypatch):
    plugin = tmp_path / "my_explainer.py"
    plugin.write_text(readme_example())
    listed = subprocess.run([sys.executable, "-m", "xaibench.cli", "list", "methods", "--plugins", str(plugin)],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^  my\.edges +Edges: Sobel", listed.stdout, re.M)
    assert "  captum.Lime " in listed.stdout  # the built-ins are still there

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # forget my.edges after this test
    load_plugins([tmp_path])
    model = tiny("ofa")
    x, y = batch()
    explanation = run_explainer(create_method("my.edges", model, power=2.0), x, y, generator=seeded())
    assert explanation.attributions.shape == (3, N)
    assert explanation.n_forward == 0  # it ignores the model, and the count knows it


def test_broken_plugins_are_one_line_errors_naming_the_file(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('no weights here')\n")
    with pytest.raises(XaibenchError, match=r"broken\.py failed to load: RuntimeError: no weights here"):
        load_plugins([broken])
    assert main(["list", "methods", "--plugins", str(broken)]) == 2
    assert "broken.py" in capsys.readouterr().err
    assert main(["list", "methods", "--plugins", str(tmp_path / "missing.py")]) == 2
    assert "missing.py not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(XaibenchError, match="holds no .py file"):
        load_plugins([tmp_path / "empty"])
