"""Cascading model parameter randomization (Adebayo et al. 2018): the stages, the copies and the Spearman test."""
from __future__ import annotations

import copy

import pytest
import scipy.stats
import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.methods import create_method, run_explainer
from xaibench.metrics.sanity import cascading_randomization, passes_sanity, spearman_rows
from xaibench.models import build_classifier, wrap_classifier
from xaibench.models.randomize import cascade_stages, randomized_copies

VIT_STAGES = ["head", "block 3", "block 2", "block 1", "block 0", "embed"]
RESNET_STAGES = ["head", "layer4", "layer3", "layer2", "layer1", "stem"]
EXPECTED = {"vit": VIT_STAGES, "ofa": VIT_STAGES, "resnet18": RESNET_STAGES, "torchvision:resnet18": RESNET_STAGES}
# Parameters that must sit in a given stage (the ones a wrong split would misplace first).
PLACED = {"vit": {"encoder.head.weight": "head", "encoder.norm.weight": "head", "encoder.pos_embed": "embed",
                  "encoder.cls_token": "embed", "encoder.mask_token": "embed",
                  "encoder.blocks.3.attn.qkv.weight": "block 3"},
          "ofa": {"log_logit_scale": "head", "class_embed": "head", "decoder.0.mlp.fc1.weight": "head",
                  "proj_patch.weight": "head", "encoder.norm.bias": "head", "encoder.reg_token": "embed",
                  "encoder.patch_embed.proj.weight": "embed", "encoder.blocks.0.norm1.weight": "block 0"},
          "resnet18": {"net.fc.weight": "head", "net.conv1.weight": "stem", "net.bn1.weight": "stem",
                       "net.layer4.1.bn2.bias": "layer4"},
          "torchvision:resnet18": {"net.fc.bias": "head", "net.conv1.weight": "stem",
                                   "net.layer1.0.conv1.weight": "layer1"}}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    built = {}
    for seed, name in enumerate(EXPECTED):
        torch.manual_seed(seed)
        built[name] = build_classifier(name, num_classes=3, in_chans=1, img_size=28).eval()
    return built


def stage_names(model: nn.Module) -> dict[str, str]:
    """parameter name -> its stage, asserting that each parameter lies in exactly one stage."""
    names = {id(p): name for name, p in model.named_parameters()}
    placed: dict[str, list[str]] = {name: [] for name in names.values()}
    for stage, modules in cascade_stages(model):
        for key in {id(p) for module in modules for p in module.parameters()}:
            assert key in names, f"stage {stage} holds a parameter that is not the model's"
            placed[names[key]].append(stage)
    wrong = {name: stages for name, stages in placed.items() if len(stages) != 1}
    assert not wrong, f"parameters in no stage or several: {list(wrong.items())[:3]}"
    return {name: stages[0] for name, stages in placed.items()}


def draw(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_parameter_lies_in_exactly_one_stage(models, name):
    model = models[name]
    assert [stage for stage, _ in cascade_stages(model)] == EXPECTED[name]
    placed = stage_names(model)
    assert len(placed) == len(list(model.parameters()))
    for parameter, stage in PLACED[name].items():
        assert placed[parameter] == stage, parameter
    assert set(placed.values()) == set(EXPECTED[name])  # no stage without parameters


def test_an_unknown_architecture_is_refused_by_name():
    plain = wrap_classifier(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3)), img_size=28, in_chans=1,
                            num_classes=3)
    with pytest.raises(XaibenchError, match="WrappedClassifier.*Sequential"):
        cascade_stages(plain)
    with pytest.raises(XaibenchError, match="Linear"):
        list(randomized_copies(nn.Linear(4, 2), draw(0)))


def test_the_original_model_and_the_global_rng_are_left_alone(models):
    model = models["ofa"]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    copies = [name for name, _ in randomized_copies(model, draw(0))]
    assert copies == VIT_STAGES
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_one_seed_gives_the_same_copies_and_another_seed_others(models):
    model = models["vit"]

    def states(seed):
        return [{key: value.clone() for key, value in randomized.state_dict().items()}
                for _, randomized in randomized_copies(model, draw(seed))]

    first, again, other = states(1), states(1), states(2)
    for a, b, c in zip(first, again, other):
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not all(torch.equal(a[key], c[key]) for key in a)


@pytest.mark.parametrize("name", ["vit", "ofa", "resnet18"])
def test_copies_randomize_the_stages_cumulatively_from_the_top(models, name):
    model = models[name]
    placed = stage_names(model)
    original = dict(model.named_parameters())
    previous = None
    for k, (stage, randomized) in enumerate(randomized_copies(model, draw(3)), start=1):
        assert stage == EXPECTED[name][k - 1]
        current = dict(randomized.named_parameters())
        assert current.keys() == original.keys()
        for reached in EXPECTED[name][:k]:  # each reached stage differs somewhere from the original
            assert any(not torch.equal(current[p], original[p]) for p, s in placed.items() if s == reached), reached
        for p, s in placed.items():
            if s not in EXPECTED[name][:k]:  # not reached yet: exactly the original
                assert torch.equal(current[p], original[p]), p
            elif previous is not None and s in EXPECTED[name][:k - 1]:  # reached before: kept from copy k-1
                assert torch.equal(current[p], previous[p]), p
        previous = {p: value.detach().clone() for p, value in current.items()}


def test_reinitialised_values_follow_the_documented_rule(models):
    model = models["ofa"]
    *_, (_, full) = randomized_copies(model, draw(4))
    for name, parameter in full.named_parameters():
        value = parameter.detach()
        if name.endswith("bias"):
            assert torch.equal(value, torch.zeros_like(value)), name
        elif "norm" in name:
            assert torch.equal(value, torch.ones_like(value)), name
        else:  # matrices, tokens, positions, the 0-d log logit scale: N(0, 0.02^2) cut at 2 std
            assert value.abs().max() <= 0.04 + 1e-7, name
            if value.numel() >= 1000:
                assert 0.012 < value.std() < 0.02, name  # a normal truncated at 2 std has std 0.88 * 0.02
    assert full.log_logit_scale.abs() <= 0.04 and model.log_logit_scale.item() == pytest.approx(2.302585)


def test_batchnorm_running_statistics_are_reset(models):
    model = copy.deepcopy(models["resnet18"])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.fill_(0.5)
            module.running_var.fill_(3.0)
    stages = {}
    for stage, randomized in randomized_copies(model, draw(5)):
        stages[stage] = (randomized.net.layer1[0].bn1.running_mean.clone(), randomized.net.bn1.running_var.clone())
    assert torch.all(stages["layer2"][0] == 0.5) and torch.all(stages["layer1"][0] == 0.0)  # layer1 reached 5th
    assert torch.all(stages["layer1"][1] == 3.0) and torch.all(stages["stem"][1] == 1.0)
    assert torch.all(model.net.bn1.running_var == 3.0)


def test_spearman_rows_matches_scipy_with_ties():
    generator = draw(6)
    a = torch.randint(0, 6, (20, 30), generator=generator).float()  # many ties
    b = a + torch.randint(-3, 4, (20, 30), generator=generator).float()
    b[3] = -a[3]
    b[5] = torch.rand(30, generator=generator)
    rho = spearman_rows(a, b)
    expected = torch.tensor([scipy.stats.spearmanr(x, y).statistic for x, y in zip(a.numpy(), b.numpy())])
    assert rho.shape == (20,)
    torch.testing.assert_close(rho, expected.float(), atol=1e-6, rtol=0)
    assert rho[3].item() == pytest.approx(-1.0)
    assert spearman_rows(a[:1], a[:1]).item() == pytest.approx(1.0)


def test_spearman_rows_is_nan_for_a_constant_row_and_checks_shapes():
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    b = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    rho = spearman_rows(a, b)
    assert rho[0].item() == pytest.approx(-1.0) and torch.isnan(rho[1])
    assert torch.isnan(spearman_rows(b, a)[1])
    with pytest.raises(XaibenchError, match="one shape"):
        spearman_rows(a, b[:, :2])


def test_passes_sanity_reads_the_mean_after_the_full_cascade():
    nan = float("nan")
    assert passes_sanity(torch.tensor([[1.0, 1.0], [0.3, 0.5]]))
    assert not passes_sanity(torch.tensor([[0.1, 0.1], [0.6, 0.5]]))
    assert passes_sanity(torch.tensor([0.2, nan, 0.7]))  # NaN (constant map) left out: mean 0.45
    assert not passes_sanity(torch.tensor([0.2, nan, 0.7]), threshold=0.4)
    assert not passes_sanity(torch.tensor([[0.0, 0.0], [nan, nan]]))  # nothing to judge: fails


def test_gradient_maps_change_under_randomization_and_random_maps_do_not(models):
    model = models["ofa"]
    x = torch.rand(8, 1, 28, 28, generator=draw(7)) * 2 - 1
    targets = torch.arange(8) % 3
    before = {key: value.clone() for key, value in model.state_dict().items()}

    def sanity(method):
        def explain(network):
            return run_explainer(create_method(method, network), x, targets, generator=draw(8)).attributions
        return cascading_randomization(explain, randomized_copies(model, draw(8)), explain(model))

    results = {method: sanity(method) for method in ("grad", "random")}
    grad, random = results["grad"], results["random"]
    assert grad["stages"] == VIT_STAGES and grad["spearman"].shape == grad["spearman_abs"].shape == (6, 8)
    assert grad["spearman"][-1].mean() < 0.35  # measured 0.17 (0.13-0.22 over 4 seeds)
    assert passes_sanity(grad["spearman"]) and passes_sanity(grad["spearman_abs"])
    torch.testing.assert_close(random["spearman"], torch.ones(6, 8))  # seeded draws: the same map every time
    assert not passes_sanity(random["spearman"])
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_cascading_randomization_explains_each_copy_as_it_comes():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    same, flipped, shuffled = nn.Identity(), nn.Identity(), nn.Identity()
    maps = {id(same): x * 2, id(flipped): -x, id(shuffled): x[:, [0, 1, 3, 2]]}
    events = []

    def copies():
        for stage, network in (("top", same), ("middle", flipped), ("bottom", shuffled)):
            events.append(f"copy {stage}")
            yield stage, network

    def explain(network):
        events.append("explain")
        return maps[id(network)]

    result = cascading_randomization(explain, copies(), x)
    assert events == ["copy top", "explain", "copy middle", "explain", "copy bottom", "explain"]  # lazily, in turn
    assert result["stages"] == ["top", "middle", "bottom"]
    torch.testing.assert_close(result["spearman"], torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.8, 0.8]]))
    torch.testing.assert_close(result["spearman_abs"], torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.8, 0.8]]))
    with pytest.raises(XaibenchError, match="at least one"):
        cascading_randomization(explain, [], x)
