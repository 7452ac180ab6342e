"""The Python API: `xaibench.run(...)` runs what `xaibench run` runs and returns the result frames;
`xaibench.load_run(OUT)` reads a finished run folder back into the same frames."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xaibench.errors import XaibenchError

#: RunFrames field -> the file of a run folder it is read from
FILES = {"scores": "scores_long.csv", "curves": "curves.csv", "table1": "table1_scores.csv", "gates": "gates.csv",
         "sanity": "sanity.csv"}


@dataclass
class RunFrames:
    """A finished run as pandas frames: `scores` one row per image, method and score (scores_long.csv), `curves`
    the mean insertion/deletion curves (curves.csv), `table1` test AUC/ACC per model (table1_scores.csv, with
    --train-baselines), `gates` the truth's gates, `sanity` the randomization checks, `manifest` its
    manifest.json. A frame the run did not write is empty."""

    out: Path
    scores: pd.DataFrame
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    table1: pd.DataFrame = field(default_factory=pd.DataFrame)
    gates: pd.DataFrame = field(default_factory=pd.DataFrame)
    sanity: pd.DataFrame = field(default_factory=pd.DataFrame)
    manifest: dict[str, Any] = field(default_factory=dict)


def load_run(out: str | Path) -> RunFrames:
    """The frames of the finished run folder `out` (written by `xaibench run` or `xaibench.run`)."""
    out = Path(out)
    manifest = out / "manifest.json"
    if not manifest.is_file():
        raise XaibenchError(f"{out} is not a finished run folder (no manifest.json); valid: the --out of a "
                            f"finished `xaibench run`")
    frames = {name: pd.read_csv(out / file) if (out / file).is_file() else pd.DataFrame()
              for name, file in FILES.items()}
    return RunFrames(out, manifest=json.loads(manifest.read_text()), **frames)


def run(out: str | Path = "xaibench-out/run", *, config: str | Path | dict[str, Any] | None = None,
        preset: str | None = None, train: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
        device: str = "auto", cache: str | Path | None = None, keep_going: bool = False, progress: bool = True,
        train_baselines: bool = False, save_attributions: bool = False, execution: Any = None,
        sweep: dict[str, list[Any]] | None = None, **options: Any) -> RunFrames:
    """Run the benchmark as `xaibench run` does and return its frames (those `load_run(out)` reads back).

    `options` are the run options (`methods=["ofa", "grad"]`, `datasets=["objects"]`, `seeds=[0, 1]`,
    `n_test=64`, `curve_points=11`, ...: the fields of xaibench.engine.options.RunOptions); `train` and `data` are
    the [train] and [data.<name>] tables of a config file, laid over `config` (a file path or a dict of tables);
    `execution` an xaibench.engine.ExecutionConfig (default: serial); `sweep` an ablation as `--sweep` makes one
    (`{"n_masks": [2, 4], "run.n_draws": [2, 4]}`: every combination a variant in `out/variants/`; the frames
    returned are the combined ones, with a `variant` column). A failing unit raises RunFailedError unless
    `keep_going`.
    """
    from xaibench.config import check_sections, read_config
    from xaibench.runner import RunRequest, run_benchmark

    file_config = dict(config) if isinstance(config, dict) else read_config(config)
    for name, section in (("train", train), ("data", data)):
        if section:
            file_config[name] = {**file_config.get(name, {}), **section}
    check_sections(file_config, "xaibench.run")
    extra = {"execution": execution} if execution is not None else {}

    def request(swept: dict[str, Any], where: str | Path) -> RunRequest:
        return RunRequest.build(file_config, options, swept, preset, out=where, device=device,
                                cache=Path(cache) if cache else None, keep_going=keep_going, progress=progress,
                                train_baselines=train_baselines, save_maps=save_attributions,
                                command=["xaibench.run", *(f"{k}={v!r}" for k, v in options.items())], **extra)
    if sweep:
        from xaibench.sweep import run_sweep, variants_of

        run_sweep(request, variants_of(sweep), Path(out))
    else:
        run_benchmark(request({}, out))
    return load_run(out)
