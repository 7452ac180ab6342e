import pytest
import torch

from xaibench.errors import XaibenchError
from xaibench.models import MaskableViT, OFANet, create_model, list_models
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


def test_timm_hub_weights_fail_fast_without_network():
    import time

    start = time.monotonic()
    with pytest.raises(XaibenchError, match="--pretrained PATH"):
        create_model("vit", num_classes=2, pretrained="timm:vit_tiny_patch16_224.augreg_in21k")
    assert time.monotonic() - start < 30


@pytest.mark.cuda
def test_models_run_on_cuda():
    for name in ("ofa", "vit", "resnet18"):
        model = create_model(name, num_classes=3, in_chans=1, img_size=28).cuda().eval()
        x = torch.randn(8, 1, 28, 28, device="cuda")
        keep = torch.rand(8, 49, device="cuda") > 0.5
        with torch.autocast("cuda", dtype=torch.bfloat16):
            probs = model.forward_fn(x, keep)
        assert probs.device.type == "cuda" and torch.isfinite(probs).all()
