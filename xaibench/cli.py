"""The `xaibench` command line: list what is registered, fetch data, train (Table 1), run the benchmark (Table 2).

Usage errors (unknown names, bad values, missing files) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from xaibench.argtypes import (
    comma_ints,
    curve_points,
    positive_float,
    positive_int,
)
from xaibench.defaults import PRESETS
from xaibench.errors import XaibenchError
from xaibench.logs import LEVELS
from xaibench.registry import DATASETS, METHODS, METRICS, MODELS, UnknownNameError
from xaibench.version import __version__

REGISTRIES = {"datasets": DATASETS, "models": MODELS, "methods": METHODS, "metrics": METRICS}
EXIT_USAGE = 2


def _first_doc_line(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def cmd_list(args: argparse.Namespace) -> int:
    if args.plugins:
        from xaibench.plugins import load_plugins

        load_plugins(args.plugins)
    from xaibench.metrics.catalog import metric_group

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        registry = REGISTRIES[kind]
        names = registry.names(args.pattern)
        print(f"{kind} ({len(names)}):")
        width = max((len(n) for n in names), default=0)
        for name in names:
            family = f"[{metric_group(name)}] " if kind == "metrics" else ""
            print(f"  {name:<{width}}  {family}{_first_doc_line(registry.get(name))}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from xaibench.data import download, is_embedded, resolve_datasets

    names = args.datasets
    if not names:
        raise XaibenchError("no dataset named: give --datasets NAME[,NAME...] (or 'all' for the paper's nine)")
    for name in resolve_datasets(names):
        if is_embedded(name):
            continue
        path = download(name, args.size, args.data_root)
        print(f"{name}: {path} (MD5 verified)")
    return 0


def _execution(args: argparse.Namespace):
    """The ExecutionConfig of --backend/--jobs/--scheduler/--threads (checked here: a missing extra is a usage
    error)."""
    from xaibench.engine.backends import ExecutionConfig

    execution = ExecutionConfig(args.backend, args.jobs, args.scheduler, args.threads, tuple(args.plugins or ()),
                                getattr(args, "compile", None), args.unit_timeout)
    execution.check_installed()
    return execution


def _log_level(args: argparse.Namespace) -> str | None:
    return args.log_level or ("DEBUG" if args.verbose else None)


def _load_plugins(args: argparse.Namespace) -> None:
    """First of all: plugins may add methods, metrics, datasets or models named by the other options."""
    if getattr(args, "plugins", None):
        from xaibench.plugins import load_plugins

        load_plugins(args.plugins)


def _variants(args: argparse.Namespace) -> list:
    """The --sweep variants ([] without --sweep); checked before anything is planned."""
    if not args.sweep:
        return []
    from xaibench.sweep import parse_sweeps

    return parse_sweeps(args.sweep, args.max_variants)


def _report_failures(result) -> int:
    if result.failures:
        print(f"xaibench: {len(result.failures)} unit(s) failed:", file=sys.stderr)
        for failure in result.failures:
            print(f"  {failure['unit']}: {failure['error']}", file=sys.stderr)
        if result.skipped:
            print(f"  {len(result.skipped)} unit(s) that depend on them were skipped", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xaibench.config import parse_overrides, read_config
    from xaibench.data import resolve_datasets
    from xaibench.engine.options import preset_config
    from xaibench.logs import setup_logging
    from xaibench.runner import RunFailedError, Table1Request, resolve_device, run_table1
    from xaibench.training import distributed

    _load_plugins(args)
    setup_logging(args.quiet or distributed.rank() != 0, _log_level(args))  # under torchrun rank 0 alone logs
    config = read_config(args.config)
    if args.preset:  # the preset's [train] and [data] under the file's; its size unless --size is given
        base = preset_config(args.preset)
        config = {**config, "train": {**base["train"], **config.get("train", {})}}
    size = args.size or (preset_config(args.preset)["run"]["size"] if args.preset else 28)
    models, datasets, device = MODELS.resolve(args.models), resolve_datasets(args.datasets), resolve_device(args.device)
    out, execution, variants = Path(args.out), _execution(args), _variants(args)

    def request(swept: dict, where: Path) -> Table1Request:
        return Table1Request(models, datasets, where, device, size=size, seeds=args.seeds, config=config,
                             overrides={**parse_overrides(args.set), **swept}, root=args.data_root,
                             cache=Path(args.cache) if args.cache else None, keep_going=args.keep_going,
                             progress=not args.quiet, dry_run=args.dry_run, execution=execution)
    try:
        if variants:
            from xaibench.sweep import run_train_sweep

            return _report_failures(run_train_sweep(request, variants, out, args.dry_run))
        result = run_table1(request({}, out))
    except RunFailedError as error:
        print(f"xaibench: error: {error}", file=sys.stderr)
        return error.exit_code
    if not args.dry_run and distributed.rank() == 0 and (out / "table1.md").exists():
        print(f"Table 1 written to {out}/table1.{{csv,tex,md}}", file=sys.stderr)
        print((out / "table1.md").read_text())
    return _report_failures(result)


def _run_flags(args: argparse.Namespace) -> dict:
    return {"methods": args.methods, "metrics": args.metrics, "datasets": args.datasets, "seeds": args.seeds,
            "size": args.size,
            "n_test": args.n_test, "curve_points": args.curve_points, "target": args.target, "model": args.model,
            "checkpoint": args.checkpoint, "figures": False if args.no_figures else None}


def cmd_run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from xaibench.config import parse_overrides, read_config
    from xaibench.logs import setup_logging
    from xaibench.runner import RunFailedError, RunRequest, run_benchmark

    started = time.perf_counter()
    _load_plugins(args)
    setup_logging(args.quiet, _log_level(args))
    out, file_config, execution, variants = Path(args.out), read_config(args.config), _execution(args), _variants(args)

    def request(swept: dict, where: Path) -> RunRequest:
        return RunRequest.build(file_config, _run_flags(args), {**parse_overrides(args.set), **swept}, args.preset,
                                out=where, device=args.device, root=args.data_root,
                                cache=Path(args.cache) if args.cache else None, keep_going=args.keep_going,
                                progress=not args.quiet, train_baselines=args.train_baselines,
                                command=["xaibench", *sys.argv[1:]], dry_run=args.dry_run,
                                save_maps=args.save_attributions, execution=execution)
    try:
        if variants:
            from xaibench.sweep import run_sweep

            result = run_sweep(request, variants, out, args.dry_run)
        else:
            result = run_benchmark(request({}, out))
    except RunFailedError as error:
        print(f"xaibench: error: {error}", file=sys.stderr)
        return error.exit_code
    if args.dry_run:
        return 0
    if variants:
        print(f"{len(variants)} variants in {out}/variants/; sweep.csv, sweep_cost.md and every table with a "
              f"variant column in {out}/", file=sys.stderr)
    elif (out / "table2.md").exists():
        print(f"\nTable 2 (SRG, R-SRG x100) in {out}/table2.{{csv,tex,md}}:", file=sys.stderr)
        print((out / "table2.md").read_text())  # stdout holds the table alone: `xaibench run > table.md`
    print(f"{result.n_units} units ({result.n_cached} cached), {time.perf_counter() - started:.0f} s; "
          f"results in {out}/ (manifest.json lists every file, run.log the log)", file=sys.stderr)
    return _report_failures(result)


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    """The options `run` and `train` share, with one meaning each."""
    parser.add_argument("--data-root",
                        help="folder of the MedMNIST npz files (default $XAIBENCH_DATA, else ~/.medmnist)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--plugins", action="append", metavar="PATH",
                        help="a plugin .py file, or a folder of them, to load first (repeatable)")
    parser.add_argument("--config", help=f"TOML or JSON file with {what} options")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a recipe laid under --config, the flags and --set. paper: ViT-B/16 224 px from DINOv2 "
                             "(timm weights in the local cache), M = 32, batch 64, AdamW lr 1e-5 wd 1e-5, 10k steps "
                             "(at most 100 epochs), the nine sets, every test image at every curve point (GPU-days; "
                             "see docs/running.md)")
    parser.add_argument("--cache", help="cache folder for checkpoints and finished units "
                                        "(default $XAIBENCH_CACHE, else ~/.cache/xaibench)")
    parser.add_argument("--keep-going", action="store_true",
                        help="on a failing unit, report it, skip what depends on it and finish the others "
                             "(exit code 1 at the end)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (every unit, cached or to do) and exit; nothing is trained or written")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no training log")
    parser.add_argument("-v", "--verbose", action="store_true", help="every log line (--log-level DEBUG)")
    parser.add_argument("--log-level", choices=LEVELS, help="the log's threshold (default INFO); the log goes to "
                                                           "stderr, and `run` keeps a copy as run.log in --out")
    parser.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                        help="ablation: every combination of the swept values is a variant (repeatable; the keys "
                             "--set takes, e.g. --sweep n_masks=2,4 --sweep run.n_draws=2,4); each variant's "
                             "outputs in --out/variants/<KEY=V,...>, the tables with a variant column in --out")
    parser.add_argument("--max-variants", type=positive_int, default=64,
                        help="refuse a --sweep of more combinations than this, before any work (default 64)")
    where = parser.add_argument_group("where units run (the results do not depend on it at equal --threads)")
    where.add_argument("--backend", default="serial", choices=["serial", "loky", "dask", "ray"],
                      help="serial: one unit after another in this process (default); loky: --jobs local worker "
                           "processes; dask: a dask.distributed cluster (--scheduler, else a local one of --jobs "
                           "workers; pip install 'xaibench[dask]'); ray: ray's joblib backend ('xaibench[ray]')")
    where.add_argument("--jobs", type=positive_int, default=1,
                      help="parallel workers (default 1; with loky, dask or ray; one GPU each when several)")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="address of a running dask scheduler")
    where.add_argument("--unit-timeout", type=positive_float, metavar="SECONDS",
                      help="a unit that runs longer fails (named, like any failed unit; serial and loky backends)")
    where.add_argument("--threads", type=positive_int,
                      help="torch intra-op threads per unit (default: all cores when serial, cores/jobs in a "
                           "worker). CPU results depend on it: equal --threads give byte-identical tables")


def _add_list(sub) -> None:
    p_list = sub.add_parser("list", help="print the registered datasets, models, methods and metrics",
                            description="Print what is registered, with each entry's one-line description.")
    p_list.add_argument("kind", nargs="?", choices=list(REGISTRIES), help="only this registry")
    p_list.add_argument("--pattern", help="glob on names, e.g. 'captum.*'")
    p_list.add_argument("--plugins", action="append", metavar="PATH",
                        help="a plugin .py file, or a folder of them, to load first (repeatable)")
    p_list.set_defaults(func=cmd_list)


def _add_download(sub) -> None:
    p_dl = sub.add_parser("download", help="fetch MedMNIST+ files into the data root (needs network)",
                          description="Download MedMNIST+ release files through medmnist and verify their MD5. "
                                      "Fails fast when the host cannot be reached.")
    p_dl.add_argument("--datasets", help="comma-separated names, or 'all' for the paper's nine")
    p_dl.add_argument("--size", type=int, default=28, choices=[28, 64, 128, 224], help="image side (default 28)")
    p_dl.add_argument("--data-root", help="folder of the npz files (default $XAIBENCH_DATA, else ~/.medmnist)")
    p_dl.set_defaults(func=cmd_download)


def _add_train(sub) -> None:
    p_train = sub.add_parser(
        "train", help="train classifiers and write Table 1 (test AUC/ACC)",
        description="Train (or load from the checkpoint cache) each model on each dataset and seed, evaluate the "
                    "test split with medmnist's Evaluator and write Table 1 as CSV, LaTeX and Markdown. Every "
                    "training and evaluation is a cached unit: a killed run resumes.",
        epilog="Training options come from --config FILE ([train] and [train.<model>] tables in TOML, or the same "
               "keys in JSON), then --set key=value. Example: --set steps=300 --set n_masks=8. "
               "Exit codes: 0 done, 1 a unit failed, 2 bad usage.")
    p_train.add_argument("--models", default="resnet18,resnet50,vit,segm,ofa",
                         help="comma-separated model names (default: all five of Table 1)")
    p_train.add_argument("--datasets", default="objects", help="comma-separated names or 'all' (default objects)")
    p_train.add_argument("--size", type=int, help="image side in pixels (default 28; 224 with --preset paper)")
    p_train.add_argument("--seeds", type=comma_ints, default=[0], help="comma-separated seeds (default 0)")
    p_train.add_argument("--out", default="xaibench-out/train", help="result folder (default xaibench-out/train)")
    p_train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one training option")
    _common(p_train, "[train]")
    p_train.set_defaults(func=cmd_train)


RUN_DESCRIPTION = (
    "For every dataset and seed: train (or load from the checkpoint cache) the OFA network, explain its first "
    "--n-test test images with every method, score the explanations with SRG, R-SRG (plausibility where the "
    "dataset has an annotated region; agreement with the model's exact object Shapley values, with the gates "
    "that qualify it, where the dataset re-renders its objects, as the default 'objects' does), run the sanity "
    "checks (cascading model randomization), and write Table 2, side tables (truth, gates, sanity, plausibility, "
    "cost, Wilcoxon tests, intervals), scores_long.csv, figures and manifest.json into --out. The run is planned "
    "first (--dry-run prints the plan); every unit is cached, so a killed run resumes where it stopped.")
RUN_EPILOG = (
    "Defaults are RunOptions' (xaibench/engine/options.py). A --config FILE (TOML/JSON: [run], [train], "
    "[train.<model>], [data.<name>], [model]) is laid over them key by key, then the flags, then --set: "
    "'--set steps=300' sets a training option, '--set run.n_draws=4' a run option, "
    "'--set data.objects.n_samples=500' a dataset option, '--set run.sanity_images=0' turns the sanity checks "
    "off, '--set run.sanity_data=true' adds the data randomization test, '--set model.mean=[0.5]' an option of a "
    "--checkpoint classifier. Exit codes: 0 done, 1 a unit failed, 2 bad usage (names, config, plugin).")


def _add_run(sub) -> None:
    p_run = sub.add_parser("run", help="the whole benchmark: train/load OFA, explain, score (SRG, R-SRG), write "
                                       "Table 2 and figures", description=RUN_DESCRIPTION, epilog=RUN_EPILOG)
    from xaibench.engine.options import RunOptions

    defaults = RunOptions.defaults()

    def listed(key: str) -> str:
        value = defaults[key]
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    p_run.add_argument("--methods", help=f"comma-separated explainer names or globs (default {listed('methods')})")
    p_run.add_argument("--metrics", help=f"comma-separated metric names, globs, families (faithfulness.*, robustness, "
                                         f"localisation, complexity, randomisation, truth) or all; `xaibench list "
                                         f"metrics` shows each one's family (default {listed('metrics')})")
    p_run.add_argument("--datasets", help=f"comma-separated names, 'all', or path:DIR (default {listed('datasets')})")
    p_run.add_argument("--size", type=int, help=f"image side in pixels (default {listed('size')})")
    p_run.add_argument("--seeds", type=comma_ints, help=f"comma-separated seeds (default {listed('seeds')})")
    p_run.add_argument("--n-test", type=int, help=f"explain and score the first N test images "
                                                  f"(default {listed('n_test')})")
    p_run.add_argument("--curve-points", type=curve_points, help="points per SRG/R-SRG curve, k = 0..n evenly spaced, "
                                                           f"or 'all' (default {listed('curve_points')})")
    p_run.add_argument("--target", choices=["label", "predicted"],
                       help=f"class explained and scored: label = ground truth (default {listed('target')})")
    p_run.add_argument("--model", help=f"the network explained: a registered name, or torchvision:NAME / timm:NAME "
                                       f"with --checkpoint (default {listed('model')})")
    p_run.add_argument("--checkpoint", metavar="PATH", help="weights of --model: it is explained and scored as it "
                                                            "is, without training (a state dict or safetensors)")
    p_run.add_argument("--out", default="xaibench-out/run", help="result folder (default xaibench-out/run)")
    p_run.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one option (training by default; run.<key>, data.<name>.<key>, model.<key>)")
    p_run.add_argument("--train-baselines", action="store_true",
                       help="also train ResNet-18/50, ViT and Segm and write Table 1 (slow)")
    p_run.add_argument("--save-attributions", action="store_true",
                       help="write every explained image's patch map to --out/attributions/*.safetensors")
    p_run.add_argument("--no-figures", action="store_true", help="skip the figures")
    p_run.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                       help="torch.compile the masked forward the metrics run (backend default inductor; worth it "
                            "on CUDA at ViT-B scale, a compile costs seconds to minutes). Results do not depend on it")
    _common(p_run, "[run], [train] and [data.<name>]")
    p_run.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xaibench",
        description="Benchmark attribution methods on medical images: train OFA and baselines, explain test "
                    "images with every registered method, score them with SRG and R-SRG, and write tables.",
        epilog="Run `xaibench <command> --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"xaibench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    from xaibench.cli_cache import add_cache

    for add in (_add_list, _add_download, _add_train, _add_run, add_cache):
        add(sub)
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
        print("xaibench: interrupted (finished units are cached: the same command resumes)", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk, a folder that cannot be written: no traceback, no partial file
        where = f" {error.filename}" if getattr(error, "filename", None) else ""
        print(f"xaibench: error: cannot write{where}: {error.strerror or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
