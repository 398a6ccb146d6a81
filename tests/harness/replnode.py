"""A small standalone replicating node for tests and benches: serves Flight, replicates, optionally writes.

``python -m tests.harness.replnode --data-dir D --node ws-a --store s --port P --peer grpc://127.0.0.1:Q [--cert-dir C]
[--write-cameras cam-1,cam-2 --rate N --events-per-segment K --seed S --windows W --token T --first-window F]``

The written data is deterministic: for camera c and window i (1 s from ``--base`` + i), K ``line_cross`` events at
``base + i + (j + 1) / (K + 1)``, track ``seed * 1_000_000 + i * K + j``, direction ``in`` for even j. Windows
``F .. F + W - 1`` are written at ``--rate`` windows per second per camera; a restart rewrites them idempotently
(same bytes). With ``--cert-dir`` (a store CA folder holding ``<node>.crt``/``.key``) the node replicates over
mutual TLS and signs what it writes; without, plain text and unsigned (the opt-out). When all are written,
``<data>/catalog/writer_done`` is created. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from actors.events import Event
from cluster.pki import Identity
from storage.catalog import CATALOG_DIR
from storage.replication import Replicator
from storage.segments import SegmentWriter, sweep_temp_files

log = logging.getLogger("tests.harness.replnode")

DEFAULT_BASE = 1719828000.0  # 2024-07-01T10:00:00Z
TZ = "Europe/London"


def window_events(camera: str, base: float, i: int, k: int, seed: int) -> list[Event]:
    """The deterministic events of window ``i`` of ``camera``."""
    return [
        Event(
            base + i + (j + 1) / (k + 1),
            camera,
            seed * 1_000_000 + i * k + j,
            "line_cross",
            line_id="L1",
            direction="in" if j % 2 == 0 else "out",
        )
        for j in range(k)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--node", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--peer", required=True)
    p.add_argument("--write-cameras", default="")
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--events-per-segment", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--windows", type=int, default=60)
    p.add_argument("--first-window", type=int, default=0)
    p.add_argument("--token", type=int, default=1)
    p.add_argument("--base", type=float, default=DEFAULT_BASE)
    p.add_argument("--anti-entropy-s", type=float, default=2.0)
    p.add_argument("--cert-dir", type=Path, help="store CA folder: mutual TLS and signed files")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.node} %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sweep_temp_files(args.data_dir)
    identity = Identity.load(args.cert_dir, args.node) if args.cert_dir else None
    repl = Replicator(
        args.data_dir,
        args.store,
        args.node,
        args.peer,
        port=args.port,
        anti_entropy_s=args.anti_entropy_s,
        identity=identity,
    )
    repl.start()
    try:
        cameras = [c for c in args.write_cameras.split(",") if c]
        if cameras:
            signer = identity.signer() if identity else None
            writer = SegmentWriter(args.data_dir, args.store, TZ, args.node, signer=signer)
            for i in range(args.first_window, args.first_window + args.windows):
                if stop.is_set():
                    break
                for cam in cameras:
                    ws = args.base + i
                    events = window_events(cam, args.base, i, args.events_per_segment, args.seed)
                    info = writer.write(
                        cam, ws, ws + 1.0, events, frames=10, token=args.token, config_version="c1", model_version="m1"
                    )
                    if not info.existed:
                        repl.notify(info.segment_id, info.path, info.sha256)
                stop.wait(1.0 / args.rate)
            if not stop.is_set():
                (args.data_dir / CATALOG_DIR).mkdir(parents=True, exist_ok=True)
                (args.data_dir / CATALOG_DIR / "writer_done").write_text(str(time.time()))
                log.info("node %s: wrote all %d windows of %s", args.node, args.windows, ",".join(cameras))
        for _ in range(10**9):
            if stop.wait(0.5):
                break
    finally:
        repl.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
