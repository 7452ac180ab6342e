"""The `xaibench` command line: list what is registered, fetch data, train, explain and score.

Usage errors (unknown names, bad values, missing files) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from xaibench import __version__
from xaibench.errors import XaibenchError
from xaibench.registry import DATASETS, METHODS, METRICS, MODELS, UnknownNameError

REGISTRIES = {"datasets": DATASETS, "models": MODELS, "methods": METHODS, "metrics": METRICS}
EXIT_USAGE = 2


def _first_doc_line(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def cmd_list(args: argparse.Namespace) -> int:
    if args.plugins:
        from xaibench.plugins import load_plugins

        load_plugins(args.plugins)
    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        registry = REGISTRIES[kind]
        names = registry.names(args.pattern)
        print(f"{kind} ({len(names)}):")
        width = max((len(n) for n in names), default=0)
        for name in names:
            print(f"  {name:<{width}}  {_first_doc_line(registry.get(name))}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from xaibench.data import download, resolve_datasets

    for name in resolve_datasets(args.datasets):
        if name == "synthetic":
            continue
        path = download(name, args.size, args.data_root)
        print(f"{name}: {path} (MD5 verified)")
    return 0


def _comma_ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xaibench.config import parse_overrides, read_config
    from xaibench.data import resolve_datasets
    from xaibench.runner import resolve_device, run_table1

    config = read_config(args.config)
    models = MODELS.resolve(args.models)
    datasets = resolve_datasets(args.datasets)
    device = resolve_device(args.device)
    out = Path(args.out)
    run_table1(models, datasets, size=args.size, root=args.data_root, seeds=args.seeds, out=out, device=device,
               config=config, overrides=parse_overrides(args.set), cache=Path(args.cache) if args.cache else None,
               progress=not args.quiet)
    print(f"Table 1 written to {out}/table1.{{csv,tex,md}}")
    print((out / "table1.md").read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xaibench",
        description="Benchmark attribution methods on medical images: train OFA and baselines, explain test "
                    "images with every registered method, score them with SRG and R-SRG, and write tables.",
        epilog="Run `xaibench <command> --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"xaibench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    p_list = sub.add_parser("list", help="print the registered datasets, models, methods and metrics",
                            description="Print what is registered, with each entry's one-line description.")
    p_list.add_argument("kind", nargs="?", choices=list(REGISTRIES), help="only this registry")
    p_list.add_argument("--pattern", help="glob on names, e.g. 'captum.*'")
    p_list.add_argument("--plugins", action="append", metavar="PATH",
                        help="a plugin .py file, or a folder of them, to load first (repeatable)")
    p_list.set_defaults(func=cmd_list)

    p_dl = sub.add_parser("download", help="fetch MedMNIST+ files into the data root (needs network)",
                          description="Download MedMNIST+ release files and verify their MD5. Fails fast when "
                                      "the host cannot be reached.")
    p_dl.add_argument("datasets", help="comma-separated names, or 'all' for the paper's nine")
    p_dl.add_argument("--size", type=int, default=28, choices=[28, 64, 128, 224], help="image side (default 28)")
    p_dl.add_argument("--data-root", help="folder of the npz files (default $XAIBENCH_DATA, else ~/.medmnist)")
    p_dl.set_defaults(func=cmd_download)

    p_train = sub.add_parser(
        "train", help="train classifiers and write Table 1 (test AUC/ACC)",
        description="Train (or load from the checkpoint cache) each model on each dataset and seed, evaluate the "
                    "test split with medmnist's Evaluator and write Table 1 as CSV, LaTeX and Markdown.",
        epilog="Training options (TrainConfig fields) come from --config FILE ([train] and [train.<model>] tables "
               "in TOML, or the same keys in JSON), then --set key=value. Example: --set steps=300 --set n_masks=8")
    p_train.add_argument("--models", default="resnet18,resnet50,vit,segm,ofa",
                         help="comma-separated model names (default: all five of Table 1)")
    p_train.add_argument("--datasets", default="synthetic", help="comma-separated names or 'all' (default synthetic)")
    p_train.add_argument("--size", type=int, default=28, help="image side in pixels (default 28)")
    p_train.add_argument("--data-root", help="folder of the MedMNIST npz files (default $XAIBENCH_DATA, else ~/.medmnist)")
    p_train.add_argument("--seeds", type=_comma_ints, default=[0], help="comma-separated seeds (default 0)")
    p_train.add_argument("--out", default="xaibench-out/train", help="result folder (default xaibench-out/train)")
    p_train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p_train.add_argument("--config", help="TOML or JSON file with [train] options")
    p_train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one training option")
    p_train.add_argument("--cache", help="checkpoint cache folder (default $XAIBENCH_CACHE, else ~/.cache/xaibench)")
    p_train.add_argument("--quiet", action="store_true", help="no progress bars")
    p_train.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (XaibenchError, UnknownNameError) as error:
        print(f"xaibench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xaibench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
