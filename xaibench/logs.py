"""Logging for the command line: one line per finished unit and per training evaluation, through stdlib
`logging`, to stderr (written with tqdm.write so that it does not tear the progress bars), so that stdout holds
only a command's result (`xaibench run > table.md`); and a copy of a run's log as `run.log` in its --out."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class TqdmHandler(logging.Handler):
    """Writes records to stderr above any live tqdm bar (plain print when no bar is shown)."""

    def __init__(self, bars: bool):
        super().__init__()
        self.bars = bars

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self.bars:
                from tqdm.auto import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  (logging must never break a run)
            self.handleError(record)


def setup_logging(quiet: bool, level: str | None = None) -> None:
    """The `xaibench` loggers to stderr, once. `quiet` keeps the unit lines and drops the training log; `level`
    (one of LEVELS; -v is DEBUG) sets every xaibench logger's threshold instead."""
    root = logging.getLogger("xaibench")
    for handler in list(root.handlers):
        if isinstance(handler, TqdmHandler):
            root.removeHandler(handler)
    handler = TqdmHandler(bars=not quiet)
    handler.setLevel(level or logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level or logging.INFO)
    logging.getLogger("xaibench.training").setLevel(level or (logging.WARNING if quiet else logging.INFO))


@contextlib.contextmanager
def captured_log(path: Path) -> Iterator[Path]:
    """Copy every xaibench log record of the block (at INFO and above) into the file `path`."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("xaibench")
    before = root.level
    if root.getEffectiveLevel() > logging.INFO:  # the file keeps the unit lines even when the screen does not
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
        handler.close()
