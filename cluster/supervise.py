"""Below the lease when the agent dies and its machine lives (issue 21): the node's supervisor.

``edgepair node`` runs as a small supervisor process whose one child is the node agent (the same command with
``--agent``). The supervisor does nothing while the agent runs. When the agent exits for any reason (a crash, an
OOM kill, SIGKILL, or a clean stop), the supervisor, in this order:

1. **stops the cameras for certain**: it SIGKILLs every process left below it (the agent's Ray: GCS, raylet, the
   camera and inference actors; it is their *child subreaper*, so the agent's orphans are re-parented to it rather
   than to init) and waits until they are gone;
2. **hands the cameras over at once**: it revokes the agent's etcd session lease (its id is in ``<run dir>/lease``,
   written by the agent at each grant), so its member key and, if it led, the leader key vanish now; the peer's
   watch on the store's keys fires and it takes over within its watch latency instead of waiting up to the lease TTL.

Step 2 only ever follows step 1: no camera of this node can still be running when the peer is told it may start it.
If a process will not die (a task stuck in the kernel) or etcd cannot be reached, the lease is left to expire by
itself (the fence stops whatever still runs before it does): the supervisor never makes the handover less safe, only
faster. A whole machine that dies (power, kernel panic) takes its supervisor with it: the peer then waits for the
lease, the floor without power fencing (README, "Failover").

SIGTERM and SIGINT are passed on to the agent (which drains, releases leadership and exits); the supervisor then
cleans up as above and exits with the agent's status, so a service manager (systemd's ``Restart=on-failure``) sees
the agent's failure. If the supervisor itself is killed, the kernel kills the agent with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

LEASE_FILE = "lease"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_BOUND_S = 5.0


def write_lease(run_dir: Path, lease_id: int) -> None:
    """Record the agent's current session lease (atomically, mode 0600) for its supervisor."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{LEASE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"lease_id": int(lease_id), "pid": os.getpid()}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, run_dir / LEASE_FILE)


def read_lease(run_dir: Path) -> int | None:
    """The lease id the agent last recorded, None when there is none (or the file is not ours to trust)."""
    try:
        data = json.loads((run_dir / LEASE_FILE).read_text())
        return int(data["lease_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def children_pids(pid: int) -> list[int]:
    """Every process below ``pid``, found through /proc (deepest last)."""
    from cluster.pair import descendants

    return descendants(pid)


def kill_below(pid: int, bound_s: float = KILL_BOUND_S) -> list[int]:
    """SIGSTOP then SIGKILL every process below ``pid`` (several rounds: a process forked meanwhile is caught by the
    next), reaping those re-parented to us; returns the pids still alive after ``bound_s`` (empty when all died)."""
    from cluster.pair import _alive

    deadline = time.monotonic() + bound_s
    while True:
        pids = children_pids(pid)
        live = [p for p in pids if _alive(p)]
        if not live:
            _reap()
            return []
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in live:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    continue
        _reap()
        if time.monotonic() >= deadline:
            return [p for p in children_pids(pid) if _alive(p)]
        time.sleep(0.01)


def _reap() -> None:
    while True:
        try:
            done, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if done == 0:
            return


def supervise(agent_argv: Sequence[str], run_dir: Path, revoke: Callable[[int], None], node: str = "") -> int:
    """Run the agent as a child and clean up after it (module docstring); returns the agent's exit status."""
    if not _prctl(PR_SET_CHILD_SUBREAPER, 1):
        log.warning("node %s: supervisor could not become a child subreaper: orphans of the agent may outlive it", node)
    try:
        (run_dir / LEASE_FILE).unlink()  # an earlier agent's lease is not this one's to revoke
    except FileNotFoundError:
        pass
    child = subprocess.Popen(list(agent_argv), preexec_fn=_die_with_parent)

    def forward(sig: int, _frame: object) -> None:
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:  # pragma: no cover (PEP 475 retries for us)
            continue
    how = f"exited with status {rc}" if rc >= 0 else f"killed by signal {-rc} ({signal.Signals(-rc).name})"
    left = kill_below(os.getpid())
    lease = read_lease(run_dir)
    if left:
        log.error(
            "node %s: the agent %s; processes %s would not die: the lease is left to expire (its fence stops them)",
            node,
            how,
            left,
        )
    elif lease is not None:
        started = time.monotonic()
        try:
            revoke(lease)
            log.warning(
                "node %s: the agent %s; its cameras are stopped and its lease %x revoked (%.3f s): the peer takes over",
                node,
                how,
                lease,
                time.monotonic() - started,
            )
        except Exception as exc:  # the lease then expires by itself
            log.error("node %s: the agent %s; revoking its lease failed (%s): it expires by itself", node, how, exc)
    else:
        log.warning("node %s: the agent %s before it held a lease", node, how)
    return rc if rc >= 0 else 128 - rc


def agent_argv(argv: Sequence[str]) -> list[str]:
    """The agent's command: this process's own, with ``--agent``."""
    return [sys.executable, "-m", "cluster.cli", *argv, "--agent"]
