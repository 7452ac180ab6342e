"""Seeded draws: tie-breaking orders, weighted orders, uniform numbers, min-max scaling."""
import torch

from xaibench.sampling import descending_order, minmax, uniform, weighted_order


def test_descending_order_breaks_ties_by_generator():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5]])
    seen = set()
    for seed in range(30):
        order = descending_order(scores, torch.Generator().manual_seed(seed))[0].tolist()
        assert set(order[:3]) == {1, 2, 3} and order[3:] == [4, 0]
        seen.add(tuple(order[:3]))
    assert len(seen) == 6  # every order of the tied three appears
    again = descending_order(scores, torch.Generator().manual_seed(7))
    assert torch.equal(again, descending_order(scores, torch.Generator().manual_seed(7)))


def test_weighted_order_follows_the_weights():
    weights = torch.tensor([8.0, 1.0, 1.0]).expand(4000, 3)
    first = weighted_order(weights, torch.Generator().manual_seed(0))[:, 0]
    share = (first == 0).float().mean().item()
    assert abs(share - 0.8) < 0.03
    assert torch.equal(weighted_order(weights[:5], torch.Generator().manual_seed(1)),
                       weighted_order(weights[:5], torch.Generator().manual_seed(1)))


def test_uniform_and_minmax():
    u = uniform((1000,), torch.Generator().manual_seed(0), "cpu")
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.05
    m = minmax(torch.tensor([[2.0, 4.0, 3.0], [1.0, 1.0, 1.0]]), eps=0.0)
    assert torch.allclose(m, torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]))
