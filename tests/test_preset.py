"""--preset paper: the paper's recipe under the config file, flags and --set; weights checked before any work."""
from xaibench.cli import main
from xaibench.defaults import ALL_IMAGES
from xaibench.engine import RunOptions, run_config, train_config_for


def test_the_paper_preset_holds_the_papers_recipe_and_yields_to_flags_and_set():
    config, overrides = run_config({}, {"datasets": "synthetic"}, {"steps": 50}, preset="paper")
    options = RunOptions.from_dict(config["run"])
    assert options.datasets == ["synthetic"] and options.size == 224 and options.curve_points is None
    assert options.n_test == ALL_IMAGES and options.methods == ["ofa", "grad", "attn"]
    train = train_config_for("ofa", config, overrides)
    assert (train.model.arch, train.model.patch_size, train.batch_size, train.lr, train.weight_decay) == \
        ("vit-b", 16, 64, 1e-5, 1e-5)
    assert train.model.pretrained == "timm:vit_base_patch14_reg4_dinov2.lvd142m"
    assert train.options_of("ofa").n_masks == 32 and train.options_of("ofa").init is None
    assert train.steps == 50 and train.max_epochs == 100  # --set wins over the preset
    plain, _ = run_config({}, {}, {})
    assert plain["run"]["size"] == 28  # no preset: DEFAULT_RUN


def test_unknown_preset_and_missing_weights_fail_before_any_work(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as stop:  # argparse: an invalid choice is a usage error
        main(["run", "--preset", "nope"])
    assert stop.value.code == 2
    out = tmp_path / "out"
    code = main(["run", "--preset", "paper", "--datasets", "synthetic", "--out", str(out), "--cache",
                 str(tmp_path / "cache"), "--quiet", "--set", "pretrained=timm:no_such_model_xyz"])
    assert code == 2
    assert "timm has no pretrained weights 'no_such_model_xyz'" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "cache" / "checkpoints").exists()


def test_dry_run_of_the_paper_preset_plans_every_curve_point_at_224(tmp_path, capsys):
    assert main(["run", "--preset", "paper", "--datasets", "synthetic", "--dry-run", "--cache",
                 str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "train synthetic/seed0/ofa" in printed and "score synthetic/seed0/attn/rsrg" in printed


def test_set_masking_drop_reaches_the_model_and_its_key_while_the_default_key_stays():
    from xaibench.data import create_dataset
    from xaibench.training import DataSpec, TrainConfig, checkpoint_key
    from xaibench.training.trainer import model_kwargs

    spec = DataSpec("synthetic", 16, None, {"n_samples": 48})
    default, drop = TrainConfig(), TrainConfig.from_dict({"masking": "drop"})
    assert drop.model.masking == "drop" and default.model.masking == "token"
    assert checkpoint_key(spec, "ofa", drop, 0) != checkpoint_key(spec, "ofa", default, 0)
    explicit_token = TrainConfig.from_dict({"masking": "token"})
    assert checkpoint_key(spec, "ofa", explicit_token, 0) == checkpoint_key(spec, "ofa", default, 0)
    train = create_dataset("synthetic", split="train", size=16, n_samples=48)
    assert model_kwargs("ofa", train, drop)["masking"] == "drop"
    assert "masking" not in model_kwargs("resnet18", train, drop)  # a CNN has no tokens to drop
