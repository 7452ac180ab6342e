"""Any classifier wrapped into the masked-forward interface; classifiers built by name from a checkpoint."""
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.models import MaskableViT, build_classifier, create_model, wrap_classifier


def _removed_pixels_changed(model, x, keep):
    return torch.where(model.keep_to_pixels(keep), x, torch.randn_like(x) * 10)


def test_torchvision_classifier_from_its_bare_checkpoint(tmp_path):
    torch.manual_seed(0)
    bare = torchvision.models.resnet18(num_classes=2).eval()
    torch.save(bare.state_dict(), tmp_path / "resnet.pth")
    model = build_classifier("torchvision:resnet18", num_classes=2, in_chans=1, img_size=28,
                             checkpoint=str(tmp_path / "resnet.pth")).eval()
    assert model.family == "cnn" and model.n_patches == 49 and model.patch_size == 4
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), bare(x.expand(-1, 3, -1, -1)))  # grey repeated to the RGB stem
        probs = model.forward_fn(x, torch.rand(3, 49) > 0.5)
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)


def test_wrapper_checkpoint_as_safetensors_restores_the_fill(tmp_path):
    torch.manual_seed(1)
    source = build_classifier("torchvision:resnet18", num_classes=3, in_chans=3, img_size=32).eval()
    source.set_fill([0.1, -0.2, 0.3])
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = build_classifier("torchvision:resnet18", num_classes=3, in_chans=3, img_size=32,
                              checkpoint=str(tmp_path / "model.safetensors")).eval()
    assert torch.allclose(loaded.fill_value, torch.tensor([0.1, -0.2, 0.3]))
    x, keep = torch.randn(2, 3, 32, 32), torch.rand(2, 16) > 0.5
    with torch.no_grad():
        assert torch.equal(loaded(x, keep), source(x, keep))


@pytest.mark.parametrize("fill", ["mean", "zero"])
def test_removed_patches_cannot_change_the_output(fill):
    torch.manual_seed(2)
    model = build_classifier("torchvision:resnet18", num_classes=4, in_chans=3, img_size=32, patch_size=8,
                             fill=fill, fill_value=[0.2, 0.1, -0.3]).eval()
    x = torch.randn(3, 3, 32, 32)
    keep = torch.ones(3, 16, dtype=torch.bool)
    keep[:, [0, 5, 10]] = False
    changed = _removed_pixels_changed(model, x, keep)
    with torch.no_grad():
        assert torch.allclose(model(x, keep), model(changed, keep), atol=1e-5)
        assert not torch.allclose(model(x), model(changed), atol=1e-3)


def test_mask_token_fill_matches_the_maskable_vit():
    torch.manual_seed(3)
    vit = MaskableViT(img_size=28, patch_size=4, in_chans=1, num_classes=3, embed_dim=32, depth=2, num_heads=2).eval()
    model = wrap_classifier(vit, img_size=28, in_chans=1, num_classes=3, fill="token", family="vit").eval()
    x, keep = torch.randn(2, 1, 28, 28), torch.rand(2, 49) > 0.4
    with torch.no_grad():
        assert torch.allclose(model(x, keep), vit(x, keep), atol=1e-6)
        assert torch.allclose(model(x), vit(x), atol=1e-6)  # the hook is idle without a mask
        assert torch.allclose(model(x, keep), model(_removed_pixels_changed(model, x, keep), keep), atol=1e-5)
    with pytest.raises(XaibenchError, match="fill 'token' needs a module with a `mask_token`"):
        wrap_classifier(torchvision.models.resnet18(num_classes=3), img_size=28, in_chans=1, num_classes=3,
                        fill="token")


class _Probe(nn.Module):
    """Records the input it is given; a 3-channel conv stem like torchvision's."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 1)
        self.seen = None

    def forward(self, x):
        self.seen = x
        return self.stem(x).mean(dim=(2, 3))


def test_normalisation_inside_the_wrapper():
    probe = _Probe()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    model = wrap_classifier(probe, img_size=16, in_chans=1, num_classes=2, mean=mean.tolist(), std=std.tolist())
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    model(x)
    expected = ((x * 0.5 + 0.5).expand(-1, 3, -1, -1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(probe.seen, expected, atol=1e-6)
    wrap_classifier(probe, img_size=16, in_chans=1, num_classes=2)(x)
    assert torch.equal(probe.seen, x.expand(-1, 3, -1, -1))  # no mean/std: xaibench's own scale
    with pytest.raises(XaibenchError, match="mean must have 1 or 3 values"):
        wrap_classifier(probe, img_size=16, in_chans=1, num_classes=2, mean=[0.5, 0.5])
    with pytest.raises(XaibenchError, match="takes 3 channels but the images have 2"):
        wrap_classifier(probe, img_size=16, in_chans=2, num_classes=2)


def test_timm_and_registered_names(tmp_path):
    cnn = build_classifier("timm:resnet18", num_classes=2, in_chans=1, img_size=28)
    assert cnn.family == "cnn" and cnn.net.conv1.in_channels == 1
    vit = build_classifier("timm:vit_tiny_patch16_224", num_classes=2, in_chans=3, img_size=32)
    assert vit.family == "other" and vit.forward_fn(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    source = create_model("resnet18", num_classes=2).eval()
    torch.save(source.state_dict(), tmp_path / "registered.pt")
    model = build_classifier("resnet18", num_classes=2, in_chans=1, img_size=28,
                             checkpoint=str(tmp_path / "registered.pt")).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), source(x)) and model.family == "cnn"


def test_clear_one_line_errors(tmp_path):
    kwargs = dict(num_classes=2, in_chans=1, img_size=28)
    with pytest.raises(XaibenchError, match=f"checkpoint {tmp_path / 'missing.pt'} does not exist"):
        build_classifier("torchvision:resnet18", checkpoint=str(tmp_path / "missing.pt"), **kwargs)
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(XaibenchError) as caught:
        build_classifier("torchvision:resnet18", checkpoint=str(tmp_path / "five.pt"), **kwargs)
    message = str(caught.value)
    assert f"checkpoint {tmp_path / 'five.pt'} does not fit" in message and "'fc.weight': [5, 512]" in message
    assert "\n" not in message
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(XaibenchError, match="cannot read checkpoint .*junk.pt"):
        build_classifier("torchvision:resnet18", checkpoint=str(tmp_path / "junk.pt"), **kwargs)
    with pytest.raises(XaibenchError, match="unknown torchvision classifier 'resnet19'; valid: .*resnet18"):
        build_classifier("torchvision:resnet19", **kwargs)
    with pytest.raises(XaibenchError, match="unknown timm model 'resnet19'; close names: .*resnet18"):
        build_classifier("timm:resnet19", **kwargs)
    with pytest.raises(XaibenchError, match=r"vit does not take the options \['colour'\]"):
        build_classifier("vit", colour="red", **kwargs)
    with pytest.raises(XaibenchError, match="unknown model library 'keras'"):
        build_classifier("keras:resnet18", **kwargs)
    with pytest.raises(XaibenchError, match="unknown occlusion fill 'noise'; valid: mean, zero, blur, token"):
        build_classifier("torchvision:resnet18", fill="noise", **kwargs)
