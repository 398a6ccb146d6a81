"""``edgepair survey``: the pre-installation site survey, run on a store's workstation before the trip.

Given the store config, it probes every camera (reachable, codec, size, frame rate, how long the first frame takes,
a fisheye image circle in a frame), measures this host (the detector's time per frame with the config's model, so
how many frames per second it carries; disk; clock synchronisation; ONNX Runtime's providers) and the network to
the store's other hosts (TCP to each etcd member and each workstation's replication port, with its round trip).
The judgements are in :mod:`cluster.survey_checks`. It writes ``survey.json`` and a self-contained ``survey.html``
(no script, no network) into ``--out``, and prints each problem with what to change. Every probe has a bounded
timeout and a failure is a fact (its error, redacted: no camera password reaches the report), never a traceback.
Exit status: 0 when nothing is in the way, 1 otherwise.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import socket
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cluster.config import CameraConfig, Config, load_config
from cluster.doctor_checks import Finding, problems
from cluster.redact import redact
from cluster.survey_checks import CameraFact, HostFact, PortFact, SurveyFacts, diagnose

OPEN_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 3.0
DETECT_FRAMES = 12


def camera_fact(cfg: Config, cam: CameraConfig, frames: int) -> tuple[CameraFact, Any]:
    """The camera's fact and its last frame read (None when none was)."""
    import cv2

    from actors.capture import _open
    from actors.lens import estimate_circle

    shown = redact(cam.source)
    base = CameraFact(
        camera=cam.id,
        source=shown,
        stream=cam.is_stream,
        opened=False,
        configured_fps=cam.fps,
        lens=cam.lens.type if cam.lens is not None else "normal",
        views=cam.lens.views if cam.lens is not None and cam.lens.is_fisheye else 1,
    )
    started = time.monotonic()
    try:
        cap = _open(cam.source, cam.is_stream, OPEN_TIMEOUT_MS, cfg.credential_source(cam.id))
    except Exception as exc:  # SourceError, an OpenCV error: the fact is the error (redacted by _open)
        return replace(base, error=redact(str(exc))), None
    try:
        if not cap.isOpened():
            return replace(base, error="the source could not be opened"), None
        last = None
        read = 0
        open_s = 0.0
        for _ in range(frames):
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if read == 0:
                open_s = time.monotonic() - started
            read += 1
            last = frame
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if fourcc else ""
        h, w = last.shape[:2] if last is not None else (0, 0)
        circle = None
        if last is not None:
            found = estimate_circle(last)
            if found is not None:
                circle = (round(found.cx / w, 4), round(found.cy / h, 4), round(found.radius / h, 4))
        return (
            replace(
                base,
                opened=True,
                error="" if read else "opened, but no frame came",
                codec=codec if codec.isprintable() else "",
                width=int(w),
                height=int(h),
                fps=round(float(cap.get(cv2.CAP_PROP_FPS) or 0.0), 2),
                frames=read,
                open_s=round(open_s, 2),
                circle=circle,
            ),
            last,
        )
    finally:
        cap.release()


def stream_read(choice: str, main: CameraFact, sub: CameraFact, min_width: int) -> str:
    """The stream the node will read (``actors.capture.Capture._open_stream``'s rule, on what the survey saw)."""
    if choice != "auto":
        return choice
    if sub.frames and sub.width >= min_width:
        return "sub"
    return "main" if main.frames or not sub.frames else "sub"


def machine_fact(cfg: Config, frame: Any) -> HostFact:
    """This host: CPUs, memory, disk of the data dir, clock synchronisation, the detector's time per frame."""
    from cluster.health import disk_state, time_synced

    data_dir = cfg.storage.data_dir
    probe_dir = data_dir
    while not probe_dir.is_dir() and probe_dir != probe_dir.parent:  # not made yet: the disk it will be on
        probe_dir = probe_dir.parent
    free: int | None
    try:
        free = shutil.disk_usage(probe_dir).free
    except OSError:
        free = None
    if data_dir.is_dir():
        free = disk_state(data_dir)[1]
    memory: int | None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        memory = None
    model, error, ms, providers, used = "?", "", None, (), ""
    try:
        import numpy as np
        import onnxruntime

        from actors.inference import Detector
        from cluster.runner import resolve_model

        providers = tuple(onnxruntime.get_available_providers())
        path = resolve_model(cfg)
        model = path.name
        m = cfg.model
        det = Detector(str(path), family=m.family, threshold=m.threshold, tiles=m.tiles, threads=m.threads or 0)
        used = str(det.provider)
        image = frame if frame is not None else np.zeros((720, 1280, 3), np.uint8)
        det.detect(image)  # warm-up
        times = []
        for _ in range(DETECT_FRAMES):
            t0 = time.perf_counter()
            det.detect(image)
            times.append((time.perf_counter() - t0) * 1000.0)
        ms = round(statistics.median(times), 1)
    except Exception as exc:
        error = redact(f"{type(exc).__name__}: {exc}")
    return HostFact(
        cpus=os.cpu_count() or 1,
        memory_bytes=memory,
        free_bytes=free,
        min_free_bytes=cfg.cluster.health.min_free_bytes,
        clock_synced=time_synced(),
        providers=providers,
        provider=used,
        model=model,
        model_error=error,
        detect_ms=ms,
    )


def port_fact(what: str, host: str, port: int) -> PortFact:
    started = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            rtt = (time.perf_counter() - started) * 1000.0
        return PortFact(what, host, port, True, round(rtt, 2))
    except OSError as exc:
        return PortFact(what, host, port, False, error=exc.strerror or type(exc).__name__)


def ports_of(cfg: Config) -> list[tuple[str, str, int]]:
    """Every etcd member and every workstation's replication port (this host's own included: it must listen)."""
    out: list[tuple[str, str, int]] = []
    for endpoint in cfg.cluster.etcd_endpoints:
        hostport = endpoint.partition("://")[2] if "://" in endpoint else endpoint
        host, _, port = hostport.rpartition(":")
        if host and port.isdigit():
            out.append((f"etcd {hostport}", host.strip("[]"), int(port)))
    for node in cfg.cluster.nodes:
        out.append((f"replication {node.name}", node.host, node.flight_port))
    return out


def gather(cfg: Config, frames: int, with_network: bool) -> SurveyFacts:
    cameras: list[CameraFact] = []
    sample = None
    for cam in cfg.cameras:
        fact, frame = camera_fact(cfg, cam, frames)
        if cam.substream is not None:
            sub, _ = camera_fact(cfg, cam.model_copy(update={"source": cam.substream}), frames)
            fact = replace(fact, reads=stream_read(cam.stream_choice(), fact, sub, cfg.runtime.substream_min_width))
            cameras += [fact, replace(sub, camera=f"{cam.id} sub-stream", sub_of=cam.id)]
        else:
            cameras.append(fact)
        if sample is None and frame is not None:
            sample = frame
    ports = tuple(port_fact(*p) for p in ports_of(cfg)) if with_network else ()
    return SurveyFacts(cfg.store.id, socket.gethostname(), tuple(cameras), machine_fact(cfg, sample), ports)


def render_html(facts: SurveyFacts, findings: list[Finding]) -> str:
    """A self-contained page: the verdict, what to change, then every fact."""
    bad = problems(findings)
    esc = html.escape
    rows = "".join(
        f"<tr class={'ok' if f.ok else 'bad'}><td>{'OK' if f.ok else 'CHANGE'}</td><td>{esc(f.check)}</td>"
        f"<td>{esc(f.message)}</td><td><code>{esc(f.fix)}</code></td></tr>"
        for f in sorted(findings, key=lambda f: f.ok)
    )
    cams = "".join(
        f"<tr><td>{esc(c.camera)}</td><td>{esc(c.source)}</td><td>{esc(c.codec)}</td><td>{c.width}x{c.height}</td>"
        f"<td>{c.fps:g}</td><td>{c.frames}</td><td>{c.open_s:.1f} s</td>"
        f"<td>{'fisheye circle' if c.circle else esc(c.lens)}</td></tr>"
        for c in facts.cameras
    )
    verdict = "Ready" if not bad else f"{len(bad)} thing{'s' if len(bad) != 1 else ''} to change before installing"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgepair survey: {esc(facts.store)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
tr.bad td:first-child{{color:#b00;font-weight:bold}} tr.ok td:first-child{{color:#070}}
code{{white-space:pre-wrap}}</style></head><body>
<h1>Site survey: store {esc(facts.store)}</h1>
<p>Host {esc(facts.host)}, {time.strftime("%Y-%m-%d %H:%M %Z")}. <strong>{esc(verdict)}</strong>.</p>
<h2>Findings</h2><table><tr><th></th><th>check</th><th>what</th><th>what to change</th></tr>{rows}</table>
<h2>Cameras</h2><table><tr><th>camera</th><th>source</th><th>codec</th><th>size</th><th>fps</th><th>frames read</th>
<th>first frame</th><th>lens</th></tr>{cams}</table>
</body></html>
"""


def cmd_survey(args: argparse.Namespace) -> int:
    from cluster.errors import ConfigError

    cfg = load_config(args.config)
    if args.frames < 1 or args.frames > 600:
        raise ConfigError(f"--frames {args.frames}: read 1 to 600 frames a camera")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for survey.json and survey.html")
    facts = gather(cfg, args.frames, not args.no_network)
    findings = diagnose(facts)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"facts": facts.as_dict(), "findings": [f.as_dict() for f in findings], "ready": not problems(findings)}
    (out / "survey.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "survey.html").write_text(render_html(facts, findings))
    bad = problems(findings)
    for f in findings:
        mark = "ok    " if f.ok else "CHANGE"
        print(f"{mark} {f.check}: {f.message}" + (f"\n       fix: {f.fix}" if f.fix else ""))
    print(f"survey of store {cfg.store.id}: {'ready' if not bad else f'{len(bad)} to change'}; {out}/survey.html")
    return 1 if bad else 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser("survey", help="pre-installation site survey: cameras, this host's capacity, the network")
    s.add_argument("--config", required=True, help="the store YAML with the store's cameras (and its hosts)")
    s.add_argument("--out", default="survey", help="folder for survey.json and survey.html (default: ./survey)")
    s.add_argument("--frames", type=int, default=30, help="frames read from each camera (default 30)")
    s.add_argument("--no-network", action="store_true", help="skip the TCP checks of the store's other hosts")
    s.set_defaults(func=cmd_survey)
