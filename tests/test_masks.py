"""The keep masks OFA trains on: Shapley-kernel sizes, uniform keep rates, attribution-informed masks."""
import torch

from xaibench.training.masks import informed_keep_masks, shapley_kernel_sizes, uniform_keep_masks


def test_shapley_kernel_sizes_follow_the_kernel():
    n = 10
    sizes = shapley_kernel_sizes((200000,), n, torch.Generator().manual_seed(0), "cpu")
    assert sizes.min() == 1 and sizes.max() == n - 1
    k = torch.arange(1, n, dtype=torch.float64)
    expected = 1 / (k * (n - k))
    expected /= expected.sum()
    observed = torch.bincount(sizes, minlength=n)[1:].double() / len(sizes)
    assert torch.allclose(observed, expected, atol=0.005)


def test_uniform_masks_cover_all_keep_rates():
    keep = uniform_keep_masks(4000, 49, torch.Generator().manual_seed(1), "cpu")
    rate = keep.float().mean(1)
    assert abs(rate.mean() - 0.5) < 0.02 and rate.min() < 0.05 and rate.max() > 0.95


def test_informed_masks_sizes_and_guidance():
    torch.manual_seed(0)
    batch, n, m = 500, 16, 8
    attributions = torch.randn(batch, n)
    keep = informed_keep_masks(attributions, m, torch.Generator().manual_seed(2), uniform_share=0.25)
    assert keep.shape == (batch, m, n) and keep.dtype == torch.bool
    kept = keep.sum(-1)
    assert kept.min() >= 1 and kept.max() <= n - 1
    top = attributions.argmax(1)
    bottom = attributions.argmin(1)
    top_kept = keep[torch.arange(batch), :, top].float().mean(0)  # per mask slot
    bottom_kept = keep[torch.arange(batch), :, bottom].float().mean(0)
    # slots 0-1 uniform, then w, 1-w, w, 1-w ...
    assert (top_kept[2::2] > bottom_kept[2::2] + 0.2).all()
    assert (bottom_kept[3::2] > top_kept[3::2] + 0.2).all()
    assert (top_kept[:2] - bottom_kept[:2]).abs().max() < 0.15
    again = informed_keep_masks(attributions, m, torch.Generator().manual_seed(2), uniform_share=0.25)
    assert torch.equal(keep, again)
