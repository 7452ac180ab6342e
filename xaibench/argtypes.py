"""The value types of the command line's options (argparse `type=`): each refuses a bad value naming what it
expected, so argparse exits with code 2 and one line."""
from __future__ import annotations

import argparse


def comma_ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _bounded(convert, accepts, expected: str):
    """An argparse type: `convert` the text, then refuse what `accepts` rejects, naming what was expected."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accepts(value):  # NaN fails every comparison: refused too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_float = _bounded(float, lambda value: value > 0, "a number > 0")
positive_int = _bounded(int, lambda value: value >= 1, "an integer >= 1")
non_negative_float = _bounded(float, lambda value: value >= 0, "a number of days >= 0")
non_negative_int = _bounded(int, lambda value: value >= 0, "an integer >= 0")


def curve_points(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of curve points or 'all', got {text!r}") from None
