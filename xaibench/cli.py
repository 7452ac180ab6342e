"""The `xaibench` command line: list what is registered, fetch data, train (Table 1), run the benchmark (Table 2).

Usage errors (unknown names, bad values, missing files) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from xaibench import __version__
from xaibench.defaults import DEFAULT_RUN
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


def _steps(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of curve points or 'all', got {text!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from xaibench.config import parse_overrides, read_config
    from xaibench.runner import RunFailedError, RunOptions, resolve_device, run_benchmark, run_config

    started = time.perf_counter()
    if args.plugins:  # first: plugins may add methods, metrics, datasets or models named below
        from xaibench.plugins import load_plugins

        load_plugins(args.plugins)
    flags = {"methods": args.methods, "datasets": args.datasets, "seeds": args.seeds, "size": args.size,
             "n_test": args.n_test, "steps": args.steps, "target": args.target,
             "figures": False if args.no_figures else None}
    config, overrides = run_config(read_config(args.config), flags, parse_overrides(args.set))
    options = RunOptions.from_dict(config["run"])
    device = resolve_device(args.device)
    out = Path(args.out)
    if args.quiet:
        def log(line: str) -> None:  # unit lines only; no progress bars, no training log
            print(line, flush=True)
    else:
        from tqdm.auto import tqdm

        def log(line: str) -> None:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()
    try:
        result = run_benchmark(options, config=config, overrides=overrides, root=args.data_root, out=out,
                               device=device, cache=Path(args.cache) if args.cache else None,
                               keep_going=args.keep_going, progress=not args.quiet,
                               train_baselines=args.train_baselines, log=log, command=["xaibench", *sys.argv[1:]])
    except RunFailedError as error:
        print(f"xaibench: error: {error}", file=sys.stderr)
        return error.exit_code
    if (out / "table2.md").exists():
        print(f"\nTable 2 (SRG, R-SRG x100) in {out}/table2.{{csv,tex,md}}:")
        print((out / "table2.md").read_text())
    print(f"{result.n_units} units ({result.n_cached} cached), {time.perf_counter() - started:.0f} s; "
          f"results in {out}/ (manifest.json lists every file)")
    if result.failures:
        print(f"xaibench: {len(result.failures)} unit(s) failed:", file=sys.stderr)
        for failure in result.failures:
            print(f"  {failure['unit']}: {failure['error']}", file=sys.stderr)
        return 1
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

    p_run = sub.add_parser(
        "run", help="the whole benchmark: train/load OFA, explain, score (SRG, R-SRG), write Table 2 and figures",
        description="For every dataset and seed: train (or load from the checkpoint cache) the OFA network, explain "
                    "its first --n-test test images with every method, score the explanations with SRG, R-SRG "
                    "(and localization where the dataset has ground truth), and write Table 2, side tables "
                    "(localization, cost, Wilcoxon tests), scores_long.csv, figures and manifest.json into --out. "
                    "Every unit is cached, so a killed run resumes where it stopped.",
        epilog="Defaults live in xaibench/defaults.py (DEFAULT_RUN). A --config FILE (TOML/JSON: [run], [train], "
               "[train.<model>], [data.<name>]) is laid over them key by key, then the flags, then --set: "
               "'--set steps=300' sets a training option, '--set run.n_draws=4' a run option, "
               "'--set data.synthetic.n_samples=500' a dataset option. "
               "Exit codes: 0 done, 1 a unit failed, 2 bad usage (names, config, plugin).")
    run_defaults = DEFAULT_RUN["run"]

    def listed(key: str) -> str:
        value = run_defaults[key]
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    p_run.add_argument("--methods", help=f"comma-separated explainer names or globs (default {listed('methods')})")
    p_run.add_argument("--datasets", help=f"comma-separated names or 'all' (default {listed('datasets')})")
    p_run.add_argument("--size", type=int, help=f"image side in pixels (default {listed('size')})")
    p_run.add_argument("--seeds", type=_comma_ints, help=f"comma-separated seeds (default {listed('seeds')})")
    p_run.add_argument("--n-test", type=int,
                       help=f"explain and score the first N test images (default {listed('n_test')})")
    p_run.add_argument("--steps", type=_steps, help="points per SRG/R-SRG curve, k = 0..n evenly spaced, or "
                                                    f"'all' (default {listed('steps')})")
    p_run.add_argument("--target", choices=["label", "predicted"],
                       help=f"class explained and scored: label = ground truth (default {listed('target')})")
    p_run.add_argument("--data-root",
                       help="folder of the MedMNIST npz files (default $XAIBENCH_DATA, else ~/.medmnist)")
    p_run.add_argument("--out", default="xaibench-out/run", help="result folder (default xaibench-out/run)")
    p_run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p_run.add_argument("--plugins", action="append", metavar="PATH",
                       help="a plugin .py file, or a folder of them, to load first (repeatable)")
    p_run.add_argument("--config", help="TOML or JSON file with [run], [train] and [data.<name>] options")
    p_run.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one option (training by default; run.<key>, data.<name>.<key>)")
    p_run.add_argument("--cache", help="cache folder for checkpoints and finished units "
                                       "(default $XAIBENCH_CACHE, else ~/.cache/xaibench)")
    p_run.add_argument("--keep-going", action="store_true",
                       help="on a failing unit, report it and finish the others (exit code 1 at the end)")
    p_run.add_argument("--train-baselines", action="store_true",
                       help="also train ResNet-18/50, ViT and Segm and write Table 1 (slow)")
    p_run.add_argument("--no-figures", action="store_true", help="skip the figures")
    p_run.add_argument("--quiet", action="store_true", help="no progress bars and no training log")
    p_run.set_defaults(func=cmd_run)
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
