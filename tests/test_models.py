"""The masked-forward contract of every registered model, OFA's Shapley identities, pretrained weights."""
import pytest
import torch

from xaibench.errors import XaibenchError
from xaibench.models import MaskableViT, create_model, list_models
from xaibench.registry import UnknownNameError


@pytest.mark.parametrize("name", ["ofa", "segm", "vit", "resnet18", "resnet50"])
def test_masked_forward_contract(name):
    model = create_model(name, num_classes=3, in_chans=1, img_size=28).eval()
    assert model.n_patches == 49 and model.patch_size == 4
    x = torch.randn(4, 1, 28, 28)
    keep = torch.rand(4, 49) > 0.5
    probs = model.forward_fn(x, keep)
    assert probs.shape == (4, 3) and torch.allclose(probs.sum(-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(model.forward_fn(x), model.forward_fn(x, torch.ones(4, 49, dtype=torch.bool)), atol=1e-5)


@pytest.mark.parametrize("name", ["ofa", "vit", "resnet18"])
def test_masked_patch_pixels_cannot_influence_output(name):
    torch.manual_seed(1)
    model = create_model(name, num_classes=4, in_chans=3, img_size=32, patch_size=8).eval()
    x = torch.randn(3, 3, 32, 32)
    keep = torch.ones(3, 16, dtype=torch.bool)
    keep[:, [0, 5, 10]] = False
    changed = x.clone()
    pixel_keep = model.keep_to_pixels(keep)
    changed = torch.where(pixel_keep, changed, torch.randn_like(changed) * 10)
    assert not torch.equal(changed, x)
    with torch.no_grad():
        assert torch.allclose(model(x, keep), model(changed, keep), atol=1e-5)
        # ...while the same change without masking does move the output
        assert not torch.allclose(model(x), model(changed), atol=1e-3)


def test_mask_token_replaces_patch_embedding_before_position():
    torch.manual_seed(2)
    encoder = MaskableViT(img_size=28, in_chans=1, embed_dim=32, depth=1, num_heads=2).eval()
    x = torch.randn(2, 1, 28, 28)
    keep = torch.ones(2, 49, dtype=torch.bool)
    keep[0, 3] = False
    tokens = encoder.embed(x, keep)
    prefix = encoder.num_prefix_tokens
    assert prefix == 5  # class token + 4 registers
    expected = encoder.mask_token[0, 0] + encoder.pos_embed[0, prefix + 3]
    assert torch.allclose(tokens[0, prefix + 3], expected, atol=1e-6)
    # unmasked patches keep their embedding; the sequence length is unchanged
    assert torch.allclose(tokens[1], encoder.embed(x[1:], None)[0], atol=1e-6)
    assert tokens.shape[1] == prefix + 49
    # the mask token is learned: it receives a gradient
    (encoder(x, keep) * torch.randn(2, 32)).sum().backward()
    assert encoder.mask_token.grad is not None and encoder.mask_token.grad.abs().sum() > 0


def test_ofa_efficiency_identity_and_eq4():
    torch.manual_seed(3)
    model = create_model("ofa", num_classes=3, in_chans=1, img_size=28).eval()
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        phi_plus, phi_minus = model.shapley(x)
        phi = phi_plus - phi_minus
        everything = torch.ones(6, 49, dtype=torch.bool)
        nothing = torch.zeros(6, 49, dtype=torch.bool)
        z_all = model.logits(phi_plus, phi_minus, everything)
        z_none = model.logits(phi_plus, phi_minus, nothing)
        assert torch.allclose(phi.sum(1), z_all - z_none, atol=1e-4)
        assert torch.allclose(model(x), z_all, atol=1e-5)  # Eq. 5 read as z(N)
        # Eq. 4 for a random S by hand
        keep = torch.rand(6, 49) > 0.3
        by_hand = (phi_plus * keep[..., None]).sum(1) + (phi_minus * (~keep)[..., None]).sum(1)
        assert torch.allclose(model.logits(phi_plus, phi_minus, keep), by_hand, atol=1e-5)
        # the masked prediction uses phi of the masked input
        masked_plus, masked_minus = model.shapley(x, keep)
        assert torch.allclose(model(x, keep), model.logits(masked_plus, masked_minus, keep), atol=1e-5)
        target = torch.tensor([0, 1, 2, 0, 1, 2])
        assert torch.allclose(model.attributions(x, target), phi[torch.arange(6), :, target], atol=1e-6)


def test_ofa_phi_is_centred_over_classes_without_changing_predictions():
    torch.manual_seed(4)
    model = create_model("ofa", num_classes=3, in_chans=1, img_size=28).eval()
    raw = create_model("ofa", num_classes=3, in_chans=1, img_size=28, centre_classes=False).eval()
    raw.load_state_dict(model.state_dict())
    x, keep = torch.randn(5, 1, 28, 28), torch.rand(5, 49) > 0.5
    with torch.no_grad():
        phi_plus, phi_minus = model.shapley(x)
        raw_plus, raw_minus = raw.shapley(x)
        assert phi_plus.mean(-1).abs().max() < 1e-5 and phi_minus.mean(-1).abs().max() < 1e-5
        assert (raw_plus.mean(-1).abs().max() > 1e-3)  # the part no loss can see, removed by centring
        assert torch.allclose(phi_plus, raw_plus - raw_plus.mean(-1, keepdim=True), atol=1e-5)
        for mask in (None, keep):  # the same predictions, masked or not
            assert torch.allclose(model.forward_fn(x, mask), raw.forward_fn(x, mask), atol=1e-5)


def test_last_block_attention_is_a_distribution():
    model = create_model("vit", num_classes=2, in_chans=1, img_size=28).eval()
    attn = model.last_block_attention(torch.randn(2, 1, 28, 28))
    assert attn.shape == (2, 4, 54, 54)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 4, 54), atol=1e-5)


def test_sizes_up_to_vit_b_224():
    model = create_model("ofa", num_classes=9, in_chans=3, img_size=224, arch="vit-b")
    assert model.patch_size == 16 and model.n_patches == 196 and model.encoder.embed_dim == 768


def test_model_errors():
    assert {"ofa", "segm", "vit", "resnet18", "resnet50"} <= set(list_models())
    with pytest.raises(UnknownNameError, match="valid names: ofa, resnet18"):
        create_model("vgg", num_classes=2)
    with pytest.raises(XaibenchError, match="unknown ViT arch 'huge'"):
        create_model("vit", num_classes=2, arch="huge")
    with pytest.raises(XaibenchError, match="not a multiple"):
        create_model("vit", num_classes=2, img_size=30, patch_size=4)
    with pytest.raises(XaibenchError, match="unknown occlusion fill"):
        create_model("resnet18", num_classes=2, fill="noise")


def test_pretrained_from_local_file_and_clear_errors(tmp_path):
    torch.manual_seed(4)
    source = MaskableViT(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=2)
    path = tmp_path / "small.pth"
    torch.save(source.state_dict(), path)
    # grey input, finer grid: stem summed over RGB, position embedding resampled
    model = create_model("ofa", num_classes=2, in_chans=1, img_size=28, patch_size=4, arch="tiny",
                         embed_dim=64, depth=2, num_heads=2, pretrained=str(path))
    assert torch.equal(model.encoder.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)
    assert model.encoder.pos_embed.shape == (1, 54, 64)
    with pytest.raises(XaibenchError, match="does not exist"):
        create_model("vit", num_classes=2, pretrained=str(tmp_path / "missing.pth"))
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(XaibenchError, match="do not fit this model"):
        create_model("vit", num_classes=2, pretrained=str(tmp_path / "other.pth"))


def test_timm_hub_weights_fail_fast_without_network(tmp_path, monkeypatch):
    import socket
    import time

    import huggingface_hub.constants

    def closed(address, timeout=None):  # as a closed network answers, on any machine
        raise OSError(f"connection to {address[0]} refused")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(socket, "create_connection", closed)
    start = time.monotonic()
    with pytest.raises(XaibenchError, match="not in the local Hugging Face cache and huggingface.co cannot be "
                                            "reached.*--set pretrained=PATH"):
        create_model("ofa", num_classes=2, arch="vit-b", img_size=224,
                     pretrained="timm:vit_base_patch14_reg4_dinov2.lvd142m")
    assert time.monotonic() - start < 10


@pytest.mark.cuda
def test_models_run_on_cuda():
    for name in ("ofa", "vit", "resnet18"):
        model = create_model(name, num_classes=3, in_chans=1, img_size=28).cuda().eval()
        x = torch.randn(8, 1, 28, 28, device="cuda")
        keep = torch.rand(8, 49, device="cuda") > 0.5
        with torch.autocast("cuda", dtype=torch.bfloat16):
            probs = model.forward_fn(x, keep)
        assert probs.device.type == "cuda" and torch.isfinite(probs).all()


def test_dinov2_style_checkpoint_is_resampled_by_the_filter(tmp_path):
    """No class/register positions (no_embed_class), patch 14 -> 4, RGB -> grey, LayerScale kept."""
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed, resample_patch_embed
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(5)
    source = VisionTransformer(img_size=56, patch_size=14, in_chans=3, num_classes=0, embed_dim=32, depth=2,
                               num_heads=2, reg_tokens=4, no_embed_class=True, init_values=1e-5)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "dino.safetensors"))
    model = create_model("vit", num_classes=2, in_chans=1, img_size=28, embed_dim=32, depth=2, num_heads=2,
                         init_values=1e-5, pretrained=str(tmp_path / "dino.safetensors"))
    encoder = model.encoder
    assert torch.equal(encoder.blocks[1].ls1.gamma, source.blocks[1].ls1.gamma)
    assert torch.equal(encoder.reg_token, source.reg_token) and torch.equal(encoder.cls_token, source.cls_token)
    grid = resample_abs_pos_embed(source.pos_embed, new_size=(7, 7), old_size=(4, 4), num_prefix_tokens=0)
    assert encoder.pos_embed.shape == (1, 54, 32) and torch.allclose(encoder.pos_embed[:, 5:], grid)
    proj = resample_patch_embed(source.patch_embed.proj.weight.sum(1, keepdim=True), [4, 4])
    assert torch.allclose(encoder.patch_embed.proj.weight, proj, atol=1e-6)


def test_timm_weights_from_the_local_cache_need_no_network(tmp_path, monkeypatch):
    """'timm:<name>' reads the Hugging Face cache's file through timm's loader; no socket is opened."""
    import socket

    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(6)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    repo = tmp_path / "models--timm--vit_tiny_patch16_224.augreg_in21k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    model = create_model("ofa", num_classes=2, in_chans=1, img_size=28, embed_dim=192, depth=12, num_heads=3,
                         pretrained="timm:vit_tiny_patch16_224.augreg_in21k")
    encoder = model.encoder
    assert torch.equal(encoder.blocks[11].attn.qkv.weight, source.blocks[11].attn.qkv.weight)
    assert torch.equal(encoder.pos_embed[:, :1], source.pos_embed[:, :1])  # the class position; registers keep init
    assert encoder.patch_embed.proj.weight.shape == (192, 1, 4, 4)
    with pytest.raises(XaibenchError, match="timm has no pretrained weights 'vit_tiny_patch16_225'"):
        create_model("vit", num_classes=2, pretrained="timm:vit_tiny_patch16_225")


def test_every_model_names_its_family():
    from xaibench.models import MaskedClassifier

    families = {name: create_model(name, num_classes=2).family for name in ("ofa", "segm", "vit", "resnet18")}
    assert families == {"ofa": "vit", "segm": "vit", "vit": "vit", "resnet18": "cnn"}
    assert MaskedClassifier.family == "other" and MaskableViT.family == "vit"
