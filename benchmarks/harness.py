"""What the benchmark scripts share: the model/device options, building the network, CUDA-aware sync."""
from __future__ import annotations

import argparse

import torch

from xaibench.models import create_model


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that host clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def build_model(args: argparse.Namespace, name: str = "ofa") -> tuple[torch.device, torch.nn.Module]:
    """Apply --threads, then build `name` (3 classes) seeded, in eval mode, on --device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=args.in_chans, img_size=args.img_size, arch=args.arch)
    return device, model.eval().to(device)


def masked_model(name: str, variant: str, **kwargs) -> torch.nn.Module:
    """`name` built seeded with a masking variant: "token", "drop" (the device's own grouping rule), "drop@b8" (the
    bucket rule, 8 tokens) or "drop@0.02" (the cost rule: a further call must save 2% of a full-token pass)."""
    masking, _, rule = variant.partition("@")
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, masking=masking, **kwargs)
    if rule:
        encoder = model.encoder
        if rule.startswith("b"):
            encoder.drop_rule, encoder.drop_bucket = "bucket", int(rule[1:])
        else:
            encoder.drop_rule, encoder.drop_call_share = "cost", float(rule)
    return model
