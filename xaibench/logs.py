"""Logging for the command line: one line per finished unit and per training evaluation, through stdlib
`logging`, written with tqdm.write so that it does not tear the progress bars."""
from __future__ import annotations

import logging
import sys


class TqdmHandler(logging.Handler):
    """Writes records to stdout above any live tqdm bar (plain print when no bar is shown)."""

    def __init__(self, bars: bool):
        super().__init__()
        self.bars = bars

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self.bars:
                from tqdm.auto import tqdm

                tqdm.write(line, file=sys.stdout)
            else:
                print(line, file=sys.stdout)
            sys.stdout.flush()
        except Exception:  # noqa: BLE001  (logging must never break a run)
            self.handleError(record)


def setup_logging(quiet: bool) -> None:
    """The `xaibench` loggers to stdout, once; `quiet` keeps the unit lines and drops the training log."""
    root = logging.getLogger("xaibench")
    for handler in list(root.handlers):
        if isinstance(handler, TqdmHandler):
            root.removeHandler(handler)
    handler = TqdmHandler(bars=not quiet)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("xaibench.training").setLevel(logging.WARNING if quiet else logging.INFO)
