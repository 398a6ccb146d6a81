"""Real RTSP cameras for tests: ``cluster/camsim.py`` (GStreamer's RTSP server) run by Debian's ``/usr/bin/python3``.

``python3-gi`` is installed for the system Python, not for the project's virtual environment, so the server is a
subprocess. It listens on a free port of 127.0.0.1 (camsim picks it: ``--port 0``; a restart keeps it) and is always
stopped by its pid, SIGSTOPped ones included::

    with RtspServer({"cam-1": VTEST}) as server:
        capture = Capture("cam-1", server.url("cam-1"), is_stream=True)
        ...
        server.suspend()  # a hung camera: the process stops, its sockets stay open
        server.resume()
        server.restart()  # a rebooted camera: same port, new process

Tests are skipped, with the reason, where the system Python or the GStreamer packages are missing.
"""

from __future__ import annotations

import functools
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest

REPO = Path(__file__).resolve().parents[1]
CAMSIM = REPO / "cluster" / "camsim.py"
SYSTEM_PYTHON = Path("/usr/bin/python3")
HOST = "127.0.0.1"
APT_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav"
)
# GStreamer elements camsim needs, with the Debian package that brings each.
ELEMENTS = {
    "appsrc": "gstreamer1.0-plugins-base",
    "appsink": "gstreamer1.0-plugins-base",
    "decodebin": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "videorate": "gstreamer1.0-plugins-base",
    "avidemux": "gstreamer1.0-plugins-good",
    "qtdemux": "gstreamer1.0-plugins-good",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "rtpbin": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "avdec_h264": "gstreamer1.0-libav",
}
_PROBE = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
print(" ".join(e for e in sys.argv[1:] if Gst.ElementFactory.find(e) is None))
"""


@functools.cache
def unavailable_reason() -> str | None:
    """Why camsim cannot run here (a sentence naming what to install), or None when it can."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found: camsim runs with Debian's Python and python3-gi"
    try:
        done = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", _PROBE, *ELEMENTS],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{SYSTEM_PYTHON} took over 60 s to load GStreamer"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        return f"{SYSTEM_PYTHON} cannot import gi / GstRtspServer ({last}): apt-get install {APT_PACKAGES}"
    missing = done.stdout.split()
    if missing:
        packages = " ".join(sorted({ELEMENTS[e] for e in missing}))
        return f"GStreamer elements {', '.join(missing)} missing: apt-get install {packages}"
    return None


def skip_unless_available() -> None:
    """``pytest.skip`` with the reason when camsim cannot run on this machine."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


class RtspServer:
    """camsim serving ``streams`` (name to video file) on one port of 127.0.0.1, as a context manager."""

    def __init__(
        self,
        streams: dict[str, str | os.PathLike[str]],
        *,
        port: int | None = None,
        ready_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if not streams:
            raise ValueError("RtspServer needs at least one stream, got none")
        self.streams = {name: str(path) for name, path in streams.items()}
        self.port = port or 0  # 0: camsim picks a free port (no race) and names it in its READY line
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = extra_args
        self.starts = 0
        self.suspended = False
        self.scheme = "http" if "--http" in extra_args else "rtsp"
        self._proc: subprocess.Popen[str] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="camsim-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)

    # --- context manager --------------------------------------------------------------------------------------
    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    # --- public -----------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The pid of the running server."""
        if self._proc is None:
            raise RuntimeError("camsim is not running: call start() first")
        return self._proc.pid

    def url(self, name: str) -> str:
        """The URL of one stream (``rtsp://``, or ``http://`` for a server started with ``--http``)."""
        if name not in self.streams:
            raise KeyError(f"no stream {name!r}: this server serves {sorted(self.streams)}")
        if not self.port:
            raise RuntimeError("camsim has not started yet: its port is not known")
        return f"{self.scheme}://{HOST}:{self.port}/{name}"

    def start(self, attempts: int = 3) -> None:
        """Start camsim and wait (bounded) for its READY line; skip the test where GStreamer is missing.

        A restart reuses the port; if it is not free yet, starting is retried ``attempts`` times.
        """
        skip_unless_available()
        if self._proc is not None:
            raise RuntimeError(f"camsim already running (pid {self._proc.pid})")
        for attempt in range(1, attempts + 1):
            error = self._start_once()
            if not error:
                self.starts += 1
                return
            if attempt < attempts and "cannot listen" in error:
                time.sleep(0.5 * attempt)
                continue
            raise RuntimeError(f"camsim did not start on port {self.port}: {error}")

    def suspend(self) -> None:
        """SIGSTOP the server: a hung camera whose TCP connections stay open but send nothing."""
        os.kill(self.pid, signal.SIGSTOP)
        self.suspended = True

    def resume(self) -> None:
        """SIGCONT a suspended server."""
        os.kill(self.pid, signal.SIGCONT)
        self.suspended = False

    def stop(self) -> int | None:
        """Stop the server by its pid (SIGTERM, then SIGKILL after ``stop_timeout_s``); its exit status, if any."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                if self.suspended:
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self.stop_timeout_s)
        finally:
            self.suspended = False
        return proc.returncode

    def restart(self) -> None:
        """Stop the server and start a new one on the same port (a rebooted camera)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its log."""
        try:
            self.stop()
        finally:
            self._log.close()
            self.log_path.unlink(missing_ok=True)

    def log_text(self) -> str:
        """What camsim wrote on stderr so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace")

    # --- internals --------------------------------------------------------------------------------------------
    def _start_once(self) -> str:
        """Start one process and wait for READY: "" on success, else why not (the process is then stopped)."""
        args = [str(SYSTEM_PYTHON), str(CAMSIM), "--host", HOST, "--port", str(self.port), *self.extra_args]
        for name, path in self.streams.items():
            args += ["--stream", f"{name}={path}"]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=REPO
        )
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self._proc.stdout
        assert stdout is not None

        def pump() -> None:  # ends when the process exits (its stdout closes)
            with stdout:
                for line in stdout:
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name=f"camsim-{self._proc.pid}-stdout", daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("READY "):
                # READY rtsp://127.0.0.1:PORT/NAME ... (or http://): keep the port, for URLs and for restarts
                self.port = int(line.split()[1].split("/")[2].rpartition(":")[2])
                return ""
        status = self._proc.poll()
        self.stop()
        tail = " | ".join(self.log_text().strip().splitlines()[-3:])
        if status is None:
            return f"no READY line within {self.ready_timeout_s:.0f} s ({tail})"
        return f"exited with status {status} before READY ({tail})"
