"""A test-only break switch, so that the drills' own tests can prove a drill FAILS when a safety is broken.

FOR TESTS OF THE DRILLS ONLY. NEVER SET IT IN PRODUCTION: each value removes a guarantee that the store's counts
depend on.

``EDGEPAIR_UNSAFE_BREAK`` holds comma-separated values; empty or unset means none. The node agent reads it once at
start (:func:`breaks`), logs a WARNING, reports the values in every ``/health`` document (``"unsafe_break"``: the
sorted list, ``[]`` when none) and hands the set to its camera actors explicitly (it never relies on the variable
reaching the Ray worker processes). An unknown value is a :class:`~cluster.errors.ConfigError`.

- ``fence``: the fence is off. A camera worker ignores its fence deadline and never pauses; the node's runner does
  not stop a camera when the node loses its lease, is fenced, demoted or cannot reach etcd. It stops a camera only
  when the node has read a current assignment (written under the leader key's token) that gives the camera to
  another node or moves it off this node (:func:`failover.decide.given_elsewhere`), or on shutdown. A cut-off or
  frozen node then keeps counting a camera that the other node has taken over: two producers of one camera at the
  same time.
- ``drop-window``: a camera worker processes every frame as usual but never writes a window whose start is a whole
  multiple of 20 seconds (``round(start) % 20 == 0``: with the default 1 s flush interval one window in 20), and logs
  each dropped window at DEBUG. Nothing else changes: the gap shows in the coverage, not in the logs at INFO.

Test-only fault hooks (``EDGEPAIR_TEST_FAULTS``, comma-separated; FOR THE GRAY-FAILURE DRILLS ONLY). Unlike a
break, a hook removes no guarantee: it lets a drill inject a fault that cannot be caused from outside the process.
The node logs each hook as a WARNING at start and reports them in ``/health`` (``"test_faults"``). An unknown value is
a :class:`~cluster.errors.ConfigError`.

- ``fail-inference``: the node's inference actor (:func:`actors.ray_actors.start_failable_inference`) is an
  :class:`~actors.inference_server.InferenceServer` whose ONNX session raises while the file
  :func:`fail_inference_trigger` exists (the ``fail-inference`` drill creates it, and removes it to restore). Inert
  while the file is absent.
- ``clock-jump``: every process of the node (the agent and its Ray workers, through Ray's worker setup hook) reads
  its wall clock (``time.time``, ``time.time_ns``) plus the seconds written in the file :func:`clock_offset_file`
  (read at most every 0.1 s; absent or unreadable: 0); the monotonic clock is untouched, as with a real step of the
  system clock. The ``clock-jump`` drill writes an offset and writes 0 to restore. Not a real step: code that reads
  the clock another way (``datetime.now``, C++ libraries) sees the true time. A real step of one process tree's
  clock is not possible on one machine (the kernel has one realtime clock; libfaketime 0.9.10, Debian's, breaks
  ``time.sleep`` of Python 3.11 when it leaves the monotonic clock alone: its issue 426).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from cluster.errors import ConfigError

ENV = "EDGEPAIR_UNSAFE_BREAK"
FENCE = "fence"
DROP_WINDOW = "drop-window"
ALLOWED = frozenset({FENCE, DROP_WINDOW})
DROP_EVERY_S = 20

FAULTS_ENV = "EDGEPAIR_TEST_FAULTS"
FAIL_INFERENCE = "fail-inference"
CLOCK_JUMP = "clock-jump"
CLOCK_FILE_ENV = "EDGEPAIR_TEST_CLOCK_FILE"  # set by the node for its Ray workers (clock-jump only)
FAULTS_ALLOWED = frozenset({FAIL_INFERENCE, CLOCK_JUMP})

T = TypeVar("T")
R = TypeVar("R")


def breaks(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The breaks named in ``EDGEPAIR_UNSAFE_BREAK`` (of ``environ``, default the process environment)."""
    raw = (os.environ if environ is None else environ).get(ENV, "")
    values = frozenset(v.strip() for v in raw.split(",") if v.strip())
    bad = sorted(values - ALLOWED)
    if bad:
        raise ConfigError(
            f"{ENV}={raw!r}: unknown value {', '.join(repr(b) for b in bad)}; allowed values:"
            f" {', '.join(sorted(ALLOWED))} (comma-separated; a test-only switch, never set in production)"
        )
    return values


def drops_window(window_start: float) -> bool:
    """``drop-window``: True for a window that is not written (its start a whole multiple of 20 s)."""
    return round(window_start) % DROP_EVERY_S == 0


def test_faults(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The fault hooks named in ``EDGEPAIR_TEST_FAULTS`` (of ``environ``, default the process environment)."""
    raw = (os.environ if environ is None else environ).get(FAULTS_ENV, "")
    values = frozenset(v.strip() for v in raw.split(",") if v.strip())
    bad = sorted(values - FAULTS_ALLOWED)
    if bad:
        raise ConfigError(
            f"{FAULTS_ENV}={raw!r}: unknown value {', '.join(repr(b) for b in bad)}; allowed values:"
            f" {', '.join(sorted(FAULTS_ALLOWED))} (comma-separated; test-only fault hooks for the drills)"
        )
    return values


def fail_inference_trigger(data_dir: Path, node: str) -> Path:
    """``fail-inference``: while this file exists, the node's ONNX session raises (beside the data dir, not in it)."""
    return Path(data_dir).parent / f".{node}.fail-inference"


def failing_while(trigger: Path, fn: Callable[[T], R]) -> Callable[[T], R]:
    """``fn``, raising ``RuntimeError`` instead while ``trigger`` exists (checked at every call)."""

    def wrapped(arg: T) -> R:
        if trigger.exists():
            raise RuntimeError(f"test-only fail-inference: the ONNX session raises while {trigger} exists")
        return fn(arg)

    return wrapped


def clock_offset_file(data_dir: Path, node: str) -> Path:
    """``clock-jump``: the seconds the node's wall clock is off by (beside the data dir, not in it)."""
    return Path(data_dir).parent / f".{node}.clock-offset"


_clock_installed: list[Path] = []


def install_clock_offset(path: Path) -> None:
    """``clock-jump``: this process's ``time.time`` and ``time.time_ns`` read the true time plus the offset in
    ``path`` (idempotent)."""
    import threading
    import time

    if _clock_installed:
        return
    _clock_installed.append(path)
    real_time, real_time_ns, monotonic = time.time, time.time_ns, time.monotonic
    lock = threading.Lock()
    cache = [float("-inf"), 0.0]  # when read (monotonic), the offset

    def offset() -> float:
        now = monotonic()
        with lock:
            if now - cache[0] >= 0.1:
                try:
                    cache[1] = float(path.read_text().strip() or 0.0)
                except (OSError, ValueError):
                    cache[1] = 0.0
                cache[0] = now
            return cache[1]

    time.time = lambda: real_time() + offset()
    time.time_ns = lambda: real_time_ns() + int(offset() * 1e9)


def install_clock_offset_from_env() -> None:
    """Ray's worker setup hook (``clock-jump``): install the node's clock offset in a Ray worker process."""
    path = os.environ.get(CLOCK_FILE_ENV)
    if path:
        install_clock_offset(Path(path))
