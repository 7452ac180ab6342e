import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from torch import nn

from xaibench.cli import main
from xaibench.errors import XaibenchError
from xaibench.models import MaskedClassifier, create_model
from xaibench.registry import MODELS, register_model
from xaibench.training import DataSpec, TrainConfig, checkpoint_key, checkpoint_path, load_trained, train_model
from xaibench.training.building import build_model, model_kwargs
from xaibench.training.checkpoints import read_checkpoint
from xaibench.training.losses import ofa_loss
from xaibench.training.objectives import default_objective

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}
DATA = DataSpec("synthetic", 16, None, {"n_samples": 64, "seed": 5})


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig.from_dict(dict(steps=12, batch_size=8, eval_every=6, warmup_steps=2, n_masks=2, init=None,
                                      model_options=TINY)).replace(**changes)


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
    first = train_model("segm", DATA, tiny_config(), seed=3, cache=tmp_path, progress=False)
    assert first.path.exists() and first.record["best_step"] in (6, 12)
    mtime = first.path.stat().st_mtime_ns
    again = train_model("segm", DATA, tiny_config(), seed=3, cache=tmp_path, progress=False)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime  # loaded, not retrained
    elsewhere = train_model("segm", DATA, tiny_config(), seed=3, cache=tmp_path / "other", progress=False)
    for name, tensor in first.model.state_dict().items():  # same seed, same weights on the CPU
        assert torch.equal(tensor, elsewhere.model.state_dict()[name]), name
    other_seed = train_model("segm", DATA, tiny_config(), seed=4, cache=tmp_path, progress=False)
    assert other_seed.path != first.path
    assert checkpoint_key(DATA, "segm", tiny_config(), 3) != checkpoint_key(DATA, "segm", tiny_config(lr=1e-3), 3)
    # options that only matter for OFA do not change a baseline's key
    assert checkpoint_key(DATA, "vit", tiny_config(), 3) == checkpoint_key(DATA, "vit", tiny_config(n_masks=7), 3)


def test_ofa_warm_starts_from_segm(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="xaibench.training")
    config = tiny_config(init="segm", init_steps=6)
    expected = checkpoint_path(DATA, "ofa", config, 0, tmp_path)
    assert not expected.exists()
    trained = train_model("ofa", DATA, config, seed=0, cache=tmp_path, progress=False)
    assert trained.path == expected and trained.record["objective"] == "ofa"
    logs = [record.getMessage() for record in caplog.records]
    assert trained.record["init"]["from"] == "segm"
    assert any(line.startswith("segm/synthetic step 6") for line in logs)
    assert any("l3" in line for line in logs if line.startswith("ofa/"))


def test_a_legacy_pt_checkpoint_is_ignored_with_one_warning_and_the_model_retrained(tmp_path, caplog):
    config = tiny_config(steps=2, eval_every=1)
    final = checkpoint_path(DATA, "segm", config, 0, tmp_path)
    final.parent.mkdir(parents=True)
    legacy = final.with_suffix(".pt")
    torch.save({"model_name": "segm", "model_kwargs": {}, "state_dict": {}, "record": {}}, legacy)
    with caplog.at_level(logging.WARNING, logger="xaibench.training"):
        trained = train_model("segm", DATA, config, seed=0, cache=tmp_path, progress=False)
        again = train_model("segm", DATA, config, seed=0, cache=tmp_path, progress=False)
    assert trained.trained_now and trained.path == final and not again.trained_now
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and legacy.name in warnings[0] and "trained again" in warnings[0]
    with pytest.raises(XaibenchError, match="no longer reads") as error:  # named directly: one line, no unpickling
        read_checkpoint(legacy)
    assert "\n" not in str(error.value)


def test_bad_options_are_named():
    with pytest.raises(XaibenchError, match="unknown training option\\(s\\) stepz"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(XaibenchError, match="unknown detach 'both'"):
        TrainConfig.from_dict({"detach": "both"})
    with pytest.raises(XaibenchError, match="max_epochs must be >= 1"):
        TrainConfig(max_epochs=0)


def test_init_file_contents_are_part_of_the_key(tmp_path):
    start = tmp_path / "start.pt"
    start.write_bytes(b"first")
    first = checkpoint_key(DATA, "ofa", tiny_config(init=str(start)), 0)
    start.write_bytes(b"second")
    assert checkpoint_key(DATA, "ofa", tiny_config(init=str(start)), 0) != first


class TinyPluginNet(MaskedClassifier):
    """A model a user registers from a plugin file: removed patches are zeroed, a small MLP classifies."""

    def __init__(self, num_classes: int, in_chans: int = 1, img_size: int = 16, patch_size: int | None = None,
                 width: int = 8):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size * img_size, width), nn.ReLU(),
                                 nn.Linear(width, num_classes))

    def forward(self, x, keep_mask=None):
        if keep_mask is not None:
            x = x * self.keep_to_pixels(keep_mask)
        return self.net(x)


@pytest.fixture
def plugin_model():
    name = "test_tiny_plugin"
    register_model(name)(lambda num_classes, in_chans=1, img_size=16, width=8:
                         TinyPluginNet(num_classes, in_chans, img_size, width=width))
    yield name
    MODELS._entries.pop(name)


def test_a_plugin_model_trains_with_no_trainer_edit(tmp_path, plugin_model):
    # the config carries options of other models (fill, arch) and of OFA (n_masks): none reaches the plugin
    config = tiny_config(steps=6, eval_every=3, fill="blur", arch="small", model_options={"width": 6})
    trained = train_model(plugin_model, DATA, config, seed=2, cache=tmp_path, progress=False)
    assert isinstance(trained.model, TinyPluginNet) and trained.model.net[1].out_features == 6
    assert trained.record["objective"] == "ce" and trained.record["best_step"] in (3, 6)
    assert set(trained.record["history"][0]) >= {"loss", "l1", "val_acc"}
    assert trained.path == checkpoint_path(DATA, plugin_model, config, 2, tmp_path)
    mtime = trained.path.stat().st_mtime_ns
    again = train_model(plugin_model, DATA, config, seed=2, cache=tmp_path, progress=False)
    assert again.path.stat().st_mtime_ns == mtime  # loaded from the cache, not retrained
    reloaded = load_trained(trained.path)
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(reloaded.model(x), trained.model(x)) and torch.equal(again.model(x), trained.model(x))


PLUGIN_FILE = """
from torch import nn
from xaibench.models import MaskedClassifier
from xaibench.registry import register_model

class CliPluginNet(MaskedClassifier):
    def __init__(self, num_classes, in_chans=1, img_size=16, patch_size=None):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        self.head = nn.Linear(in_chans * img_size * img_size, num_classes)

    def forward(self, x, keep_mask=None):
        if keep_mask is not None:
            x = x * self.keep_to_pixels(keep_mask)
        return self.head(x.flatten(1))

@register_model("test_cli_plugin")
def cli_plugin(num_classes, in_chans=1, img_size=16, **kwargs) -> CliPluginNet:
    return CliPluginNet(num_classes, in_chans, img_size, **kwargs)
"""


def test_cli_trains_a_model_from_a_plugin_file(tmp_path):
    plugin = tmp_path / "my_model.py"
    plugin.write_text(PLUGIN_FILE)
    config = tmp_path / "train.toml"  # arch and n_masks belong to other models and objectives: ignored here
    config.write_text('[train]\nsteps = 4\neval_every = 2\nbatch_size = 8\narch = "small"\nn_masks = 8\n'
                      '[data.synthetic]\nn_samples = 48\n')
    try:
        code = main(["train", "--models", "test_cli_plugin", "--plugins", str(plugin), "--datasets", "synthetic",
                     "--size", "16", "--config", str(config), "--out", str(tmp_path / "out"),
                     "--cache", str(tmp_path / "cache"), "--quiet"])
    finally:
        MODELS._entries.pop("test_cli_plugin", None)
    assert code == 0
    assert len(list((tmp_path / "cache" / "checkpoints").glob("test_cli_plugin-synthetic-16-*.safetensors"))) == 1
    assert "test_cli_plugin" in (tmp_path / "out" / "table1.md").read_text()


def test_config_splits_into_common_model_and_objective_parts():
    config = TrainConfig.from_dict({"steps": 7, "arch": "small", "n_masks": 8, "loss_weights": [1, 1, 10],
                                    "model_options": {"depth": 1}})
    assert config.steps == 7 and config.model.arch == "small" and config.model.model_options == {"depth": 1}
    assert config.options_of("ofa").n_masks == 8 and config.options_of("ofa").loss_weights == (1, 1, 10)
    record = json.loads(json.dumps(asdict(config)))  # a record serialises, and parses back
    assert record["objectives"]["ofa"]["n_masks"] == 8 and TrainConfig.from_dict(record) == config
    assert config.replace(lr=1.0).options_of("ofa").n_masks == 8 and config.replace(lr=1.0).lr == 1.0
    assert TrainConfig(steps=7, model={"arch": "small", "model_options": {"depth": 1}},
                       objectives={"ofa": {"n_masks": 8, "loss_weights": [1, 1, 10]}}) == config
    with pytest.raises(XaibenchError) as error:
        TrainConfig.from_dict({"n_maskz": 1})
    message = str(error.value)
    assert "\n" not in message and message.startswith("unknown training option(s) n_maskz; valid: ")
    assert all(name in message for name in ("steps", "arch", "model_options", "n_masks", "init_steps", "objective"))
    with pytest.raises(XaibenchError, match="unknown training option\\(s\\) widht"):
        TrainConfig.from_dict({"model": {"widht": 3}})
    with pytest.raises(XaibenchError, match="unknown objective 'sgd'; valid: ce, ofa"):
        TrainConfig.from_dict({"objective": "sgd"})


def test_objective_comes_from_the_model_or_the_config():
    assert (default_objective("ofa"), default_objective("segm"), default_objective("vit")) == ("ofa", "ce", "ce")
    base = tiny_config()
    assert checkpoint_key(DATA, "segm", base.replace(objective="ce"), 0) == checkpoint_key(DATA, "segm", base, 0)
    as_ofa = base.replace(objective="ofa")
    assert checkpoint_key(DATA, "segm", as_ofa, 0) != checkpoint_key(DATA, "segm", base, 0)
    # under the ofa objective the OFA options are part of the key
    assert checkpoint_key(DATA, "segm", as_ofa, 0) != checkpoint_key(DATA, "segm", as_ofa.replace(n_masks=3), 0)


def test_wls_l3_is_the_squared_error_of_the_additive_logits_on_the_masked_ones():
    """l3_target="wls": l3 = mean over images, masks and classes of (z_x(S) - z_{x_S}(S))^2, on the same draws as
    the KL form (the same generator gives the same masks), with l1 and l2 unchanged."""
    from xaibench.models.ofa import OFANet
    from xaibench.training.masks import ofa_keep_masks

    torch.manual_seed(0)
    model = create_model("ofa", num_classes=3, in_chans=1, img_size=16, **TINY).eval()
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    options = dict(n_masks=3, mask_sizes="shapley", paired=True, weights=(1.0, 1.0, 1.0))
    kl = ofa_loss(model, x, y, generator=torch.Generator().manual_seed(3), **options)
    wls = ofa_loss(model, x, y, generator=torch.Generator().manual_seed(3), l3_target="wls", **options)
    assert torch.equal(kl["l1"], wls["l1"]) and torch.equal(kl["l2"], wls["l2"])
    with torch.no_grad():  # the same l3 written out from the model's two forwards
        plus, minus = model.shapley(x)
        phi = (plus - minus).gather(2, y.view(-1, 1, 1).expand(-1, model.n_patches, 1)).squeeze(2)
        _, informed = ofa_keep_masks(phi, 3, torch.Generator().manual_seed(3), 0.25, "shapley", True, None)
        flat = informed.reshape(-1, model.n_patches)
        mp, mm = model.shapley(x[:, None].expand(-1, 3, 1, 16, 16).reshape(-1, 1, 16, 16), flat)
        masked = OFANet.logits(mp, mm, flat).view(4, 3, -1)
        additive = torch.where(informed[..., None], plus[:, None], minus[:, None]).sum(2)
        expected = (additive - masked).square().mean()
    assert torch.allclose(wls["l3"], expected, atol=1e-5)
    with pytest.raises(XaibenchError, match="l3_target"):
        TrainConfig.from_dict({"l3_target": "mse"})
    assert checkpoint_key(DATA, "ofa", TrainConfig.from_dict({"l3_target": "wls"}), 0) != \
        checkpoint_key(DATA, "ofa", TrainConfig(), 0)


def test_checkpoint_keys_of_the_built_in_models_are_those_of_existing_caches():
    # computed by the trainer before objectives existed: a change here orphans every cached checkpoint
    expected = {"resnet18": ("1cb0ad2ed2af5d0c", "b3328f9d52e7f081"), "resnet50": ("ed5ec4a9abebc81c", "43c67de3ecf3b0c6"),
                "vit": ("e927cb28d279f3bd", "4d049e2b8d938b00"), "segm": ("a2e1946ce2072ca3", "c761093febfc4e39"),
                "ofa": ("e7dd760bc1f5fa8e", "13ebf71a00cc5bb0")}
    results = TrainConfig.from_dict({"n_masks": 8})  # results/config.toml
    for model, (default_key, results_key) in expected.items():
        assert checkpoint_key(DataSpec("synthetic", 28), model, TrainConfig(), 0) == default_key, model
        assert checkpoint_key(DataSpec("breastmnist", 28, "/x"), model, results, 0) == results_key, model


def test_model_options_reach_the_factories_that_take_them():
    train = DATA.load("train")
    config = tiny_config(fill="blur", arch="small", logit_scale_init=3.0, patch_size=8)
    vit, resnet, ofa = (model_kwargs(name, train, config) for name in ("vit", "resnet18", "ofa"))
    assert vit["arch"] == "small" and "fill" not in vit and "logit_scale_init" not in vit
    assert resnet["fill"] == "blur" and "arch" not in resnet and "logit_scale_init" not in resnet
    assert ofa["logit_scale_init"] == 3.0 and ofa["arch"] == "small" and "fill" not in ofa
    assert vit["patch_size"] == resnet["patch_size"] == ofa["patch_size"] == 8
    assert ofa["depth"] == 1  # model_options pass to every model as they are
    # data-derived options: a model that takes a fill_value gets the training images' channel mean
    resnet_model = build_model("resnet18", model_kwargs("resnet18", train, tiny_config(model_options={})), 0, train)
    assert torch.equal(resnet_model.fill_value, train.channel_mean())


RESUME_SCRIPT = """
import logging, sys, torch
from xaibench.training import DataSpec, TrainConfig, train_model
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
data = DataSpec("synthetic", 16, None, {"n_samples": 96, "seed": 5})
config = TrainConfig.from_dict(dict(steps=400, batch_size=8, eval_every=20, warmup_steps=2, n_masks=2, init=None,
                                    model_options={"depth": 1, "embed_dim": 32, "num_heads": 2}))
trained = train_model("ofa", data, config, seed=1, cache=sys.argv[1], progress=False)
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
    assert list((tmp_path / "b" / "checkpoints").glob("*.partial"))
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "b"), str(tmp_path / "b.pt")],
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming ofa on synthetic from step" in resumed.stdout
    assert not list((tmp_path / "b" / "checkpoints").glob("*.partial"))
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
                          progress=False)
    assert trained.record["device"] == "cuda"
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trained.record["history"])
    assert next(trained.model.parameters()).device.type == "cuda"
