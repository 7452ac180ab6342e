import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xaibench.cli import main
from xaibench.errors import XaibenchError
from xaibench.training import DataSpec, TrainConfig, checkpoint_key, train_model
from xaibench.training.losses import ofa_loss
from xaibench.models import create_model

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}
DATA = DataSpec("synthetic", 16, None, {"n_samples": 64, "seed": 5})


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(steps=12, batch_size=8, eval_every=6, warmup_steps=2, n_masks=2, init=None,
                       model_options=TINY).replace(**changes)


def test_ofa_loss_parts_and_batched_forward():
    model = create_model("ofa", num_classes=3, in_chans=1, img_size=16, **TINY)
    calls = []
    model.encoder.patch_embed.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    x, y = torch.randn(5, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1])
    losses = ofa_loss(model, x, y, n_masks=3, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "l1", "l2", "l3"}
    assert torch.isclose(losses["loss"], losses["l1"] + losses["l2"] + losses["l3"])
    assert losses["l3"] >= 0
    # one unmasked pass of B and one masked pass of B * (1 + M), not a loop over masks
    assert calls == [5, 20]
    losses["loss"].backward()
    assert model.class_embed.grad is not None and model.encoder.mask_token.grad.abs().sum() > 0


@pytest.mark.parametrize("detach", ["masked", "full", "none"])
def test_detach_choice_controls_gradient_side(detach):
    model = create_model("ofa", num_classes=2, in_chans=1, img_size=16, **TINY)
    x, y = torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 0])
    losses = ofa_loss(model, x, y, n_masks=2, generator=torch.Generator().manual_seed(1), detach=detach,
                      weights=(0.0, 0.0, 1.0))
    losses["loss"].backward()
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_training_is_cached_and_seeded(tmp_path):
    first = train_model("segm", DATA, tiny_config(), seed=3, cache=tmp_path, progress=False, log=lambda s: None)
    assert first.path.exists() and first.record["best_step"] in (6, 12)
    mtime = first.path.stat().st_mtime_ns
    again = train_model("segm", DATA, tiny_config(), seed=3, cache=tmp_path, progress=False, log=lambda s: None)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime  # loaded, not retrained
    elsewhere = train_model("segm", DATA, tiny_config(), seed=3, cache=tmp_path / "other", progress=False,
                            log=lambda s: None)
    for name, tensor in first.model.state_dict().items():  # same seed, same weights on the CPU
        assert torch.equal(tensor, elsewhere.model.state_dict()[name]), name
    other_seed = train_model("segm", DATA, tiny_config(), seed=4, cache=tmp_path, progress=False, log=lambda s: None)
    assert other_seed.path != first.path
    assert checkpoint_key(DATA, "segm", tiny_config(), 3) != checkpoint_key(DATA, "segm", tiny_config(lr=1e-3), 3)
    # options that only matter for OFA do not change a baseline's key
    assert checkpoint_key(DATA, "vit", tiny_config(), 3) == checkpoint_key(DATA, "vit", tiny_config(n_masks=7), 3)


def test_ofa_warm_starts_from_segm(tmp_path):
    logs = []
    trained = train_model("ofa", DATA, tiny_config(init="segm", init_steps=6), seed=0, cache=tmp_path,
                          progress=False, log=logs.append)
    assert trained.record["init"]["from"] == "segm"
    assert any(line.startswith("segm/synthetic step 6") for line in logs)
    assert any("l3" in line for line in logs if line.startswith("ofa/"))


def test_bad_options_are_named():
    with pytest.raises(XaibenchError, match="unknown training option\\(s\\) stepz"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(XaibenchError, match="unknown detach 'both'"):
        TrainConfig(detach="both")
    with pytest.raises(XaibenchError, match="max_epochs must be >= 1"):
        TrainConfig(max_epochs=0)


def test_init_file_contents_are_part_of_the_key(tmp_path):
    start = tmp_path / "start.pt"
    start.write_bytes(b"first")
    first = checkpoint_key(DATA, "ofa", tiny_config(init=str(start)), 0)
    start.write_bytes(b"second")
    assert checkpoint_key(DATA, "ofa", tiny_config(init=str(start)), 0) != first


RESUME_SCRIPT = """
import sys, torch
from xaibench.training import DataSpec, TrainConfig, train_model
data = DataSpec("synthetic", 16, None, {"n_samples": 96, "seed": 5})
config = TrainConfig(steps=400, batch_size=8, eval_every=20, warmup_steps=2, n_masks=2, init=None,
                     model_options={"depth": 1, "embed_dim": 32, "num_heads": 2})
trained = train_model("ofa", data, config, seed=1, cache=sys.argv[1], progress=False, log=lambda s: print(s, flush=True))
torch.save(trained.model.state_dict(), sys.argv[2])
"""


def test_training_resumes_after_a_kill(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "a.pt")],
                               env=env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "b"), str(tmp_path / "b.pt")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:  # wait until a partial checkpoint exists, then kill the process
        if line.startswith("ofa/synthetic step 60"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert list((tmp_path / "b" / "checkpoints").glob("*.partial.pt"))
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "b"), str(tmp_path / "b.pt")],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming ofa on synthetic from step" in resumed.stdout
    assert not list((tmp_path / "b" / "checkpoints").glob("*.partial.pt"))
    a, b = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_cli_train_writes_table1(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('[train]\nsteps = 6\nbatch_size = 8\neval_every = 3\nwarmup_steps = 1\ninit = "segm"\n'
                      'init_steps = 3\nn_masks = 2\n[train.model_options]\ndepth = 1\nembed_dim = 32\nnum_heads = 2\n'
                      '[data.synthetic]\nn_samples = 48\n')
    out = tmp_path / "out"
    code = main(["train", "--models", "resnet18,segm,ofa", "--datasets", "synthetic", "--size", "16",
                 "--config", str(config), "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    table = (out / "table1.md").read_text()
    assert "| ResNet-18 |" in table and "| OFA |" in table and "Synthetic AUC" in table
    assert "\\toprule" in (out / "table1.tex").read_text()
    assert (out / "table1_manifest.json").exists()


def test_cli_train_bad_input_exits_2(tmp_path, capsys):
    assert main(["train", "--models", "ofa,alexnet", "--out", str(tmp_path)]) == 2
    assert "unknown model 'alexnet'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["train", "--set", "stepz=3", "--models", "vit", "--out", str(tmp_path)]) == 2
    assert "unknown training option(s) stepz" in capsys.readouterr().err


@pytest.mark.cuda
def test_training_on_cuda_with_bf16_autocast(tmp_path):
    trained = train_model("ofa", DATA, tiny_config(init="segm", init_steps=6), seed=0, device="cuda", cache=tmp_path,
                          progress=False, log=lambda s: None)
    assert trained.record["device"] == "cuda"
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trained.record["history"])
    assert next(trained.model.parameters()).device.type == "cuda"
