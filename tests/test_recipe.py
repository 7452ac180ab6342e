"""The OFA recipe on a fast setting: looser bounds than the CPU recipe's (docs/training.md), same direction."""
import pytest
import torch

from xaibench.methods import create_method, run_explainer
from xaibench.metrics import srg
from xaibench.training import DataSpec, TrainConfig, classification_scores, load_trained, predict_proba, train_model


@pytest.mark.slow
def test_ofa_training_makes_phi_faithful_on_a_fast_setting(tmp_path):
    data = DataSpec("synthetic", 28, None, {"n_samples": 800})
    config = TrainConfig.from_dict(dict(steps=300, init_steps=200, eval_every=50,
                                        model_options={"depth": 2, "embed_dim": 64, "num_heads": 2}))
    ofa = train_model("ofa", data, config, seed=0, cache=tmp_path, progress=False)
    warm = load_trained(ofa.record["init"]["path"])  # the Segm network OFA started from
    test = data.load("test")
    assert classification_scores(predict_proba(ofa.model, test, "cpu"), test)["acc"] >= 0.7
    x, y = test.batch(slice(0, 100))

    def mean_srg(model, method):
        attributions = run_explainer(create_method(method, model), x, y, generator=torch.Generator().manual_seed(0))
        return srg(model.forward_fn, x, attributions.attributions, y, steps=13,
                   generator=torch.Generator().manual_seed(1)).srg.mean().item()

    ofa_srg, random_srg = mean_srg(ofa.model, "ofa"), mean_srg(ofa.model, "random")
    assert ofa_srg > random_srg + 0.08, (ofa_srg, random_srg)
    # measured (seeds 0, 1, 2): OFA 21.7, 16.5, 31.1 against random 1.1, 0.9, 2.8 and grad 24.8, 21.4, 28.4;
    # at 150 steps seed 0 gave only 1.6. The Segm start's phi, never trained to be Shapley values, scores below 0
    assert ofa_srg > mean_srg(warm.model, "ofa") + 0.04
