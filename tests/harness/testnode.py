"""A node process for drills and integration tests: the real HA loop over etcd, with cameras that only log.

    python -m tests.harness.testnode --name ws-a --endpoints https://127.0.0.1:2379,... --store s1 \\
        --cameras cam-1,cam-2,cam-3 --capacity 3 --ttl 2 --log events.jsonl --cert-dir pki

With ``--cert-dir`` (a ``cluster.pki`` folder holding ``ca.crt``, ``<name>.crt`` and ``<name>.key``) it talks to
etcd over mutual TLS as that workstation's user, as the node agent does; without it, plain text.

Two processes, like a real node (agent + camera workers): this one runs the HA loop; a forked camera process runs
a ``FencedRunner`` over a runner that appends ``start``/``stop`` events (wall and monotonic stamps, token) to the
JSONL log. The loop sends it renewals, starts and stops through a pipe, so when the loop process is SIGSTOPped the
camera process still fences itself on time, and when the loop process dies the camera process stops every camera
(pipe closed) and exits. The loop process logs ``leader`` and ``assignment`` events (token, success).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from failover.dcs import Assignment, Leader
from failover.fence import FencedRunner

log = logging.getLogger("tests.harness.testnode")


class EventLog:
    """Appends one JSON object per line with ``O_APPEND`` (one write per line, so two processes can share it)."""

    def __init__(self, path: str, node: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.node = node

    def write(self, event: str, **fields: Any) -> None:
        rec = {"node": self.node, "event": event, "t": time.time(), "mono": time.monotonic(), "pid": os.getpid()}
        rec.update(fields)
        os.write(self.fd, (json.dumps(rec) + "\n").encode())


class RecordingRunner:
    """Runs nothing: records start and stop of cameras."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.cams: dict[str, tuple[float, int]] = {}

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        if camera_id in self.cams:
            self.events.write("update", camera=camera_id, fps=fps, token=token)
        else:
            self.events.write("start", camera=camera_id, fps=fps, token=token)
        self.cams[camera_id] = (fps, token)

    def stop_camera(self, camera_id: str) -> None:
        if self.cams.pop(camera_id, None) is not None:
            self.events.write("stop", camera=camera_id)

    def running(self) -> set[str]:
        return set(self.cams)


def camera_process(conn: Connection, log_path: str, node: str, ttl: float) -> None:
    """The camera side: obey the loop's messages, fence on the deadline, stop everything when the loop is gone."""
    events = EventLog(log_path, node)
    parent = os.getppid()  # the forked child also holds the loop's end of the pipe: EOF alone cannot tell us
    fenced = FencedRunner(
        RecordingRunner(events), ttl, node=node, on_fence=lambda cams: events.write("fence", cameras=cams)
    ).start()
    try:
        while True:
            try:
                if os.getppid() != parent:  # the loop process died (SIGKILL): stop everything, exit
                    break
                if not conn.poll(0.01):
                    continue
                msg = conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "renewed":
                fenced.renewed(msg[1])
            elif kind == "start":
                fenced.start_camera(msg[1], msg[2], msg[3])
            elif kind == "stop":
                fenced.stop_camera(msg[1])
            elif kind == "running":
                conn.send(sorted(fenced.running()))
    finally:
        fenced.close()
        for cam in sorted(fenced.running()):
            fenced.stop_camera(cam)
        events.write("exit")


class PipeRunner:
    """The loop side of the pipe: a ``Fenced`` runner whose fence lives in the camera process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def renewed(self, at: float) -> None:
        with self.lock:
            self.conn.send(("renewed", at))

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        with self.lock:
            self.conn.send(("start", camera_id, fps, token))

    def stop_camera(self, camera_id: str) -> None:
        with self.lock:
            self.conn.send(("stop", camera_id))

    def running(self) -> set[str]:
        with self.lock:
            self.conn.send(("running",))
            return set(self.conn.recv())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--endpoints", required=True, help="comma-separated host:port (or https://host:port) list")
    parser.add_argument("--cert-dir", default=None, help="certificate folder: TLS to etcd as --name (default: plain)")
    parser.add_argument("--store", default="drill")
    parser.add_argument("--cameras", default="cam-1,cam-2,cam-3")
    parser.add_argument("--capacity", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--log", required=True, help="JSONL event file (appended)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    # Fork the camera process before any gRPC channel exists (gRPC does not survive a fork).
    ours, theirs = multiprocessing.Pipe()
    cam_proc = multiprocessing.get_context("fork").Process(
        target=camera_process, args=(theirs, args.log, args.name, args.ttl), daemon=True
    )
    cam_proc.start()
    theirs.close()

    from cluster.pki import Identity
    from failover.etcd_dcs import EtcdDCS
    from failover.loop import HALoop

    identity = Identity.load(args.cert_dir, args.name) if args.cert_dir else None

    events = EventLog(args.log, args.name)

    class RecordingDCS(EtcdDCS):
        def attempt_to_acquire_leader(self, name: str) -> Leader | None:
            leader = super().attempt_to_acquire_leader(name)
            if leader is not None:
                events.write("leader", token=leader.token)
            return leader

        def write_assignment(self, assignment: Assignment) -> bool:
            ok = super().write_assignment(assignment)
            events.write("assignment", token=assignment.token, ok=ok, cameras=assignment.cameras)
            return ok

    dcs = RecordingDCS(args.endpoints.split(","), args.store, args.ttl, identity=identity)
    loop = HALoop(
        dcs,
        args.name,
        dict.fromkeys(args.cameras.split(","), args.fps),
        args.capacity,
        PipeRunner(ours),
        ttl=args.ttl,
    )
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    events.write("up")
    try:
        loop.run()
    finally:
        loop.shutdown()
        dcs.close()
        ours.close()
        cam_proc.join(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
