"""A test hook for fault injection: $XAIBENCH_FAULT = 'kill:N' sends this process SIGKILL at its Nth event,
'interrupt:N' SIGINT (as Ctrl-C does). Events are the points where a run does work that must survive a crash:
a training step, an explained or scored batch, a file written. Unset (always, outside tests), `event` costs a
dictionary lookup. tests/test_trust.py kills runs at seeded events and checks that a rerun gives the same tables.
"""
from __future__ import annotations

import os
import signal

ENV = "XAIBENCH_FAULT"
_state = {"count": 0}


def event(name: str) -> None:
    """Count one event; at the Nth (per $XAIBENCH_FAULT) send this process the fault's signal."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _state["count"] += 1
    action, _, at = spec.partition(":")
    if _state["count"] == int(at or 0):
        os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGINT)


def reset() -> None:
    """Start counting from zero (a forked test process)."""
    _state["count"] = 0


def count() -> int:
    return _state["count"]
