"""masking="drop": the encoder runs the kept patches only; the curves stay those of a one-at-a-time loop."""
from __future__ import annotations

import pytest
import torch

from xaibench.errors import XaibenchError
from xaibench.metrics import keep_curves, resolve_steps, rsrg, srg
from xaibench.metrics.curves import drops_removed_patches, ranks_of
from xaibench.models import create_model
from xaibench.models.vit import padded_lengths
from xaibench.sampling import minmax, weighted_order
from xaibench.training import DataSpec, TrainConfig, checkpoint_key, load_trained, train_model
from xaibench.training.losses import ofa_loss

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}
N = 16  # 16 px images, 4 px patches


def pair(name: str, dtype=torch.float64):
    """The same weights under each masking."""
    models = []
    for masking in ("token", "drop"):
        torch.manual_seed(0)
        models.append(create_model(name, num_classes=3, img_size=16, patch_size=4, masking=masking,
                                   **TINY).eval().to(dtype))
    return models


def batch(n_images: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_images, 1, 16, 16, generator=g, dtype=torch.float64)
    keep = torch.rand(n_images, N, generator=g) < torch.rand(n_images, 1, generator=g)
    return x, keep, g


@pytest.mark.parametrize("name", ["vit", "ofa", "segm"])
def test_drop_keeps_the_weights_and_the_unmasked_output_and_differs_only_in_masking(name):
    token, drop = pair(name)
    assert (token.masking, drop.masking) == ("token", "drop")
    assert all(torch.equal(a, b) for a, b in zip(token.state_dict().values(), drop.state_dict().values()))
    x, keep, _ = batch(6, 1)
    keep[0], keep[1] = False, True  # nothing kept, everything kept
    with torch.no_grad():
        assert torch.equal(drop(x), token(x))
        assert torch.equal(drop(x, torch.ones_like(keep)), token(x))
        assert not torch.allclose(drop(x, keep), token(x, keep), atol=1e-3)  # a different masked forward


@pytest.mark.parametrize("name", ["vit", "ofa"])
@pytest.mark.parametrize("bucket", [1, 8, "cost"])
def test_mixed_kept_counts_in_one_call_equal_one_row_at_a_time(name, bucket):
    _, drop = pair(name)
    if bucket == "cost":  # the GPU's rule, here on the CPU: few calls, padded to each group's largest count
        drop.encoder.drop_rule, drop.encoder.drop_call_share = "cost", 0.2
    else:  # 8: rows padded within buckets of 8 counts, pads masked out of attention
        drop.encoder.drop_bucket = bucket
    x, keep, _ = batch(24, 2)
    keep[0], keep[1] = False, True
    with torch.no_grad():
        together = drop.forward_fn(x, keep)
        alone = torch.cat([drop.forward_fn(x[i:i + 1], keep[i:i + 1]) for i in range(24)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)


def partitions(k: int):
    """Every cut of k sorted items into contiguous groups, as lists of group ends."""
    for mask in range(2 ** (k - 1)):
        yield [j + 1 for j in range(k - 1) if mask >> j & 1] + [k]


@pytest.mark.parametrize("seed", range(6))
def test_the_cost_rule_finds_the_cheapest_contiguous_grouping(seed):
    g = torch.Generator().manual_seed(seed)
    n, prefix, share = 12, 2, [0.0, 0.03, 0.1, 1.0][seed % 4]
    counts = torch.randint(0, n + 1, (int(torch.randint(2, 30, (1,), generator=g)),), generator=g)
    lengths = padded_lengths(counts, n, call_share=share, prefix=prefix)
    assert bool((lengths >= counts).all())
    order = counts.argsort()
    assert bool((lengths[order].diff() >= 0).all())  # contiguous groups of the sorted counts
    values, sizes = counts.unique(return_counts=True)
    per_call = share * counts.numel() * (n + prefix)

    def cost(ends):
        starts = [0] + ends[:-1]
        return sum(int(sizes[a:b].sum()) * (int(values[b - 1]) + prefix) + per_call for a, b in zip(starts, ends))
    best = min(cost(ends) for ends in partitions(values.numel()))
    used = sum(int((lengths == length).sum()) * (length + prefix) + per_call for length in lengths.unique().tolist())
    assert used == pytest.approx(best)
    if share == 0.0:
        assert torch.equal(lengths, counts)  # no call costs anything: every count its own call, nothing padded
    if share == 1.0:
        assert lengths.unique().numel() == 1  # a call costs a full pass: one call


def test_removed_patches_never_reach_the_encoder():
    _, drop = pair("ofa")
    lengths = []
    drop.encoder.blocks[0].register_forward_hook(lambda module, inputs, output: lengths.append(inputs[0].shape[1]))
    x, keep, g = batch(4, 3)
    keep = torch.zeros(4, N, dtype=torch.bool)
    keep[:, :5] = True
    with torch.no_grad():
        before = drop.shapley(x, keep)
        x[:, :, 8:, :] = torch.randn(4, 1, 8, 16, generator=g, dtype=torch.float64)  # patches 8..15: removed
        after = drop.shapley(x, keep)
    assert lengths == [drop.encoder.num_prefix_tokens + 5] * 2
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def loop_curve(model, image, target, kept_sets):
    with torch.no_grad():
        return [float(model.forward_fn(image[None], keep[None])[0, target]) for keep in kept_sets]


@pytest.mark.parametrize("masking", ["token", "drop"])
def test_srg_and_rsrg_equal_a_one_at_a_time_loop_on_both_maskings(masking):
    model = pair("ofa")[masking == "drop"]
    x, _, g = batch(3, 4)
    attributions = torch.randn(3, N, generator=g, dtype=torch.float64)
    targets = torch.tensor([0, 2, 1])
    ks = [0, 3, 7, 12, 16]
    result = srg(model.forward_fn, x, attributions, targets, steps=ks, batch_size=5, random_baseline=False)
    rresult = rsrg(model.forward_fn, x, attributions, targets, n_draws=2, steps=ks, batch_size=5,
                   generator=torch.Generator().manual_seed(9))
    unit = minmax(attributions.float(), eps=0.0)
    weights = torch.stack([unit + 1e-6, 1 - unit + 1e-6], dim=1)[:, :, None].expand(3, 2, 2, N)
    draws = weighted_order(weights, torch.Generator().manual_seed(9))  # [B, R-LIF/R-MIF, draw, n]
    for b in range(3):
        order = attributions[b].argsort(descending=True)
        sets = lambda ranked: [torch.isin(torch.arange(N), ranked[: N - k]) for k in ks]
        mif = loop_curve(model, x[b], int(targets[b]), sets(order.flip(0)))
        lif = loop_curve(model, x[b], int(targets[b]), sets(order))
        torch.testing.assert_close(result.mif[b], torch.tensor(mif, dtype=torch.float64), rtol=0, atol=1e-9)
        torch.testing.assert_close(result.lif[b], torch.tensor(lif, dtype=torch.float64), rtol=0, atol=1e-9)
        for curve, name in ((0, "rlif"), (1, "rmif")):
            ys = torch.tensor([loop_curve(model, x[b], int(targets[b]), sets(draws[b, curve, d])) for d in range(2)],
                              dtype=torch.float64).mean(0)
            torch.testing.assert_close(getattr(rresult, name)[b], ys, rtol=0, atol=1e-9)


def test_the_curve_engine_gives_a_drop_model_one_kept_count_per_call():
    token, drop = pair("vit")
    assert drops_removed_patches(drop.forward_fn) and not drops_removed_patches(token.forward_fn)
    counts = []

    def recording(x, keep):
        counts.append(keep.sum(1).unique().tolist())
        return drop.forward_fn(x, keep)

    x, _, g = batch(5, 5)
    ranks = ranks_of(torch.rand(5, 2, N, generator=g).argsort(dim=-1))
    targets = torch.tensor([0, 1, 2, 0, 1])
    removed = resolve_steps(None, N)
    grouped = keep_curves(recording, x, ranks, removed, targets, batch_size=7, group_by_kept=True)
    assert all(len(c) == 1 for c in counts) and len(counts) > N + 1
    assert sorted({c[0] for c in counts}) == list(range(N + 1))
    plain = keep_curves(drop.forward_fn, x, ranks, removed, targets, batch_size=7, group_by_kept=False)
    torch.testing.assert_close(grouped, plain, rtol=0, atol=1e-12)
    # packed (the CUDA default): full calls in ascending kept count, neighbouring counts padded by the model
    drop.encoder.drop_rule = "cost"
    counts.clear()
    packed = keep_curves(recording, x, ranks, removed, targets, batch_size=16, group_by_kept=True, pack=True)
    calls = [c for c in counts]
    assert sum(len(c) > 1 for c in calls) > 0 and max(c[-1] for c in calls[:-1]) <= max(calls[-1])
    assert all(a[-1] <= b[0] for a, b in zip(calls, calls[1:]))  # ascending across calls
    torch.testing.assert_close(packed, plain, rtol=0, atol=1e-12)


def test_ofa_training_with_drop_masking_reaches_every_part_and_is_recorded(tmp_path):
    _, drop = pair("ofa", torch.float32)
    drop.train()
    x, _, g = batch(4, 6)
    parts = ofa_loss(drop, x.float(), torch.tensor([0, 1, 2, 0]), n_masks=4, generator=g, mask_sizes="uniform",
                     paired=True)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])
    for name in ("encoder.mask_token", "encoder.pos_embed", "encoder.blocks.0.attn.qkv.weight", "class_embed"):
        assert drop.get_parameter(name).grad.abs().sum() > 0, name
    data = DataSpec("synthetic", 16, None, {"n_samples": 32, "seed": 5})
    config = TrainConfig.from_dict(dict(steps=2, batch_size=8, eval_every=2, warmup_steps=1, n_masks=2, init=None,
                                        patch_size=4, model_options={**TINY, "masking": "drop"}))
    token_config = config.replace(model_options=dict(TINY))
    assert checkpoint_key(data, "ofa", config, 0) != checkpoint_key(data, "ofa", token_config, 0)
    trained = train_model("ofa", data, config, seed=0, cache=tmp_path)
    assert trained.model.masking == "drop" and load_trained(trained.path).model.masking == "drop"


def test_an_unknown_masking_is_refused_in_one_line():
    with pytest.raises(XaibenchError, match="^unknown masking 'zero'; valid: token, drop$"):
        create_model("vit", num_classes=3, img_size=16, patch_size=4, masking="zero", **TINY)
