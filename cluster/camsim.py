#!/usr/bin/python3
"""Simulated IP cameras: video files served as live RTSP streams by GStreamer's RTSP server.

Standalone on purpose (stdlib and PyGObject only, no edgepair imports): Debian's ``python3-gi`` works with
``/usr/bin/python3``, not with the project's virtual environment, so tests and the demo run it as a subprocess::

    /usr/bin/python3 cluster/camsim.py --port 8554 --stream cam-1=/path/a.avi --stream cam-2=/path/b.mp4

Each camera is a producer pipeline that decodes its file at real time and loops it forever, running whether or not
anyone watches, as a camera does (after the process was SIGSTOPped, it skips to the present rather than catching
up). Clients of ``rtsp://127.0.0.1:<port>/<name>`` share one RTSP media per camera: an ``appsrc`` fed with the
producer's current frame, timestamped on arrival, encoded with x264 (zerolatency, one key frame a second so that a
new client decodes within a second) and payloaded as RTP/H.264.

``--transport udp`` serves RTP over UDP only (the server's UDP ports come from an address pool on ``--host``: it
binds nothing on other interfaces); ``--http`` serves each camera as MJPEG over HTTP instead of RTSP
(``http://127.0.0.1:<port>/<name>``: ``multipart/x-mixed-replace``, one JPEG part per frame, encoded by GStreamer's
``jpegenc``), as IP cameras' ``/mjpg/video.mjpg`` endpoints do.

Prints ``READY rtsp://127.0.0.1:<port>/<name> ...`` (or ``http://...``) on stdout once every file has been decoded and
the server is listening (``--port 0`` picks a free port and the line names it). Errors go to stderr with exit status 1
(2 for bad arguments), a decoding error while serving included; SIGTERM and SIGINT stop it cleanly with exit status 0.
Debian packages: gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-plugins-{base,good,bad,ugly}, gstreamer1.0-libav.
"""

from __future__ import annotations

import argparse
import http.server
import os
import queue
import signal
import socketserver
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PREROLL_TIMEOUT_S = 20
PRODUCER = (
    "filesrc name=file ! decodebin ! videoconvert ! videorate ! video/x-raw,format=I420{rate} "
    "! appsink name=sink sync=true max-lateness=50000000 max-buffers=2 drop=true emit-signals=true"
)
ENCODER = (
    "( appsrc name=src is-live=true format=time do-timestamp=true min-latency=0 "
    "! queue max-size-buffers=2 leaky=downstream {scale}! {codec} )"
)
CODECS = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} threads=2 "
    "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} "
    "! video/x-h265 ! rtph265pay name=pay0 pt=96 config-interval=-1",
    # RTP/JPEG (RFC 2435) carries frames of at most 2040 x 2040 pixels.
    "mjpeg": "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26",
}
"""The codecs a camera can serve (``--codec``): what IP cameras send over RTSP."""
UDP_PORTS = (40000, 49999)
"""The UDP ports ``--transport udp`` allocates RTP/RTCP pairs from (on ``--host`` only)."""
MJPEG = (
    "appsrc name=src is-live=true format=time do-timestamp=true min-latency=0 "
    "! queue max-size-buffers=2 leaky=downstream {scale}! videoconvert ! jpegenc quality=85 "
    "! appsink name=jpeg sync=false max-buffers=2 drop=true emit-signals=true"
)
BOUNDARY = "camsimframe"
HTTP_CLIENT_QUEUE = 4
"""JPEG parts a slow HTTP client may fall behind before its oldest are dropped (a camera does not wait)."""
HTTP_CLIENT_TIMEOUT_S = 10.0
"""An HTTP client that sends no request, or reads nothing, for this long is disconnected (its thread ends)."""
HTTP_MAX_CLIENTS = 32
"""HTTP clients served at once; more are answered 503 (each holds a thread)."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 3840x2160, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size {text!r}: 16 to 8192 pixels each way")
    return w, h


def log(message: str) -> None:
    """One line on stderr (stdout carries only the READY line)."""
    print(f"camsim: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StreamSpec:
    """One ``--stream NAME=PATH`` argument."""

    name: str
    path: str

    @classmethod
    def parse(cls, text: str) -> StreamSpec:
        """Parse ``NAME=PATH``; raise ``argparse.ArgumentTypeError`` with what was expected and what came."""
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
        if not all(c.isalnum() or c in "-_." for c in name):
            raise argparse.ArgumentTypeError(f"stream name {name!r}: use letters, digits, '-', '_' or '.'")
        if not os.path.isfile(path):
            raise argparse.ArgumentTypeError(f"video file {path!r} not found")
        return cls(name, os.path.abspath(path))


class Camera:
    """One looping producer pipeline whose frames are pushed into the ``appsrc`` of every prepared RTSP media."""

    def __init__(self, spec: StreamSpec, fps: int, on_error: Callable[[str], None]) -> None:
        self.spec = spec
        self._on_error = on_error
        rate = f",framerate={fps}/1" if fps > 0 else ""
        pipeline = Gst.parse_launch(PRODUCER.format(rate=rate))
        assert isinstance(pipeline, Gst.Pipeline)
        self.pipeline = pipeline
        self.pipeline.get_by_name("file").set_property("location", spec.path)
        self.pipeline.get_by_name("sink").connect("new-sample", self._on_sample)
        self._lock = threading.Lock()
        self._sources: list[Gst.Element] = []
        self._caps: Gst.Caps | None = None
        self.frames = 0
        self.loops = 0
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def start(self) -> None:
        """Decode the first frame (proves the file is playable), then play at real time."""
        self.pipeline.set_state(Gst.State.PAUSED)
        result, _state, _pending = self.pipeline.get_state(PREROLL_TIMEOUT_S * Gst.SECOND)
        if result != Gst.StateChangeReturn.SUCCESS:
            raise RuntimeError(
                f"stream {self.spec.name}: cannot decode {self.spec.path} (preroll: {result.value_nick})"
            )
        self.pipeline.set_state(Gst.State.PLAYING)

    def stop(self) -> None:
        """Stop producing and forget the media sources."""
        self.pipeline.set_state(Gst.State.NULL)
        self.pipeline.get_bus().remove_signal_watch()
        with self._lock:
            self._sources.clear()

    def attach(self, media: GstRtspServer.RTSPMedia) -> None:
        """Feed a newly configured RTSP media until it is unprepared."""
        src = media.get_element().get_by_name("src")
        self.add_source(src)
        media.connect("unprepared", self._detach, src)
        log(f"stream {self.spec.name}: media prepared")

    def add_source(self, src: Gst.Element) -> None:
        """Feed ``src`` (an ``appsrc``) every frame from now on."""
        with self._lock:
            if self._caps is not None:
                src.set_property("caps", self._caps)
            self._sources.append(src)

    def _detach(self, _media: GstRtspServer.RTSPMedia | None, src: Gst.Element) -> None:
        with self._lock:
            if src in self._sources:
                self._sources.remove(src)
        log(f"stream {self.spec.name}: media unprepared")

    def _on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        self.frames += 1
        with self._lock:
            if not self._sources:
                return Gst.FlowReturn.OK
            caps = sample.get_caps()
            if self._caps is None or not caps.is_equal(self._caps):
                self._caps = caps
                for src in self._sources:
                    src.set_property("caps", caps)
            sources = list(self._sources)
        buf = sample.get_buffer().copy()
        buf.pts = buf.dts = Gst.CLOCK_TIME_NONE  # appsrc stamps it on arrival (do-timestamp): a live camera's clock
        for src in sources:
            src.emit("push-buffer", buf)  # a flushing or stopped media refuses it: nothing to do
        return Gst.FlowReturn.OK

    def _on_message(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.EOS:
            self.loops += 1
            # Back to the first frame: the flushing seek resets the running time, the sink keeps real time.
            if not self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0):
                log(f"stream {self.spec.name}: cannot seek {self.spec.path} back to the start")
        elif message.type == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            self._on_error(f"stream {self.spec.name}: {err.message} ({debug})")


class MjpegFeed:
    """One camera as MJPEG over HTTP: its frames JPEG-encoded by GStreamer, each part handed to every HTTP client."""

    def __init__(self, camera: Camera, size: tuple[int, int] | None) -> None:
        scale = f"! videoscale ! video/x-raw,width={size[0]},height={size[1]} " if size else ""
        pipeline = Gst.parse_launch(MJPEG.format(scale=scale))
        assert isinstance(pipeline, Gst.Pipeline)
        self.pipeline = pipeline
        self.camera = camera
        self._lock = threading.Lock()
        self._clients: list[queue.Queue[bytes]] = []
        pipeline.get_by_name("jpeg").connect("new-sample", self._on_jpeg)
        pipeline.set_state(Gst.State.PLAYING)
        camera.add_source(pipeline.get_by_name("src"))

    def stop(self) -> None:
        """Stop encoding."""
        self.pipeline.set_state(Gst.State.NULL)

    def subscribe(self) -> queue.Queue[bytes]:
        """A queue that receives every JPEG from now on (the oldest dropped when the client falls behind)."""
        q: queue.Queue[bytes] = queue.Queue(maxsize=HTTP_CLIENT_QUEUE)
        with self._lock:
            self._clients.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[bytes]) -> None:
        """Stop feeding ``q``."""
        with self._lock:
            if q in self._clients:
                self._clients.remove(q)

    def _on_jpeg(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.OK
        try:
            jpeg = bytes(info.data)
        finally:
            buf.unmap(info)
        with self._lock:
            clients = list(self._clients)
        for q in clients:
            while True:
                try:
                    q.put_nowait(jpeg)
                    break
                except queue.Full:
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass
        return Gst.FlowReturn.OK


def build_http_server(feeds: dict[str, MjpegFeed], host: str, port: int) -> socketserver.ThreadingTCPServer:
    """An HTTP server answering ``GET /<name>`` with the camera's MJPEG stream (``multipart/x-mixed-replace``)."""

    slots = threading.BoundedSemaphore(HTTP_MAX_CLIENTS)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        timeout = HTTP_CLIENT_TIMEOUT_S  # the socket's: an idle or stuck client does not hold its thread for good

        def do_GET(self) -> None:
            feed = feeds.get(self.path.lstrip("/"))
            if feed is None:
                self.send_error(404, f"no camera {self.path[:64]!r}")
                return
            if not slots.acquire(blocking=False):
                self.send_error(503, f"{HTTP_MAX_CLIENTS} clients already")
                return
            try:
                self._stream(feed)
            finally:
                slots.release()

        def _stream(self, feed: MjpegFeed) -> None:
            q = feed.subscribe()
            try:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                while True:
                    jpeg = q.get(timeout=10)
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpeg + b"\r\n")
            except (OSError, queue.Empty):
                pass  # the client went away, or the camera stopped producing
            finally:
                feed.unsubscribe(q)

        def log_message(self, format: str, *args: object) -> None:
            log(f"http {self.address_string()}: {format % args}")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    return Server((host, port), Handler)


def encoder(codec: str, kbps: int, gop: int, size: tuple[int, int] | None) -> str:
    """The media factory's launch line: ``codec`` of :data:`CODECS`, frames scaled to ``size`` (width, height)."""
    scale = f"! videoscale ! video/x-raw,width={size[0]},height={size[1]} " if size else ""
    return ENCODER.format(scale=scale, codec=CODECS[codec].format(kbps=kbps, gop=gop))


def build_server(
    cameras: dict[str, Camera],
    host: str,
    port: int,
    kbps: int,
    gop: int,
    codec: str = "h264",
    size: tuple[int, int] | None = None,
    transport: str = "tcp",
) -> GstRtspServer.RTSPServer:
    """An RTSP server with one shared media factory per camera, mounted at ``/<name>``.

    ``transport`` tcp: RTP goes interleaved in the RTSP connection, as OpenCV's FFMPEG backend asks first; the server
    binds no UDP port, and a client asking for UDP gets ``461 Unsupported transport`` and falls back to TCP (ffmpeg,
    VLC and GStreamer clients do). udp: RTP over UDP only (a client asking for TCP is refused and must fall back to
    UDP), from ports of :data:`UDP_PORTS` on ``host`` alone (an address pool: without one the server would bind
    every interface).
    """
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    mounts = server.get_mount_points()
    for name, camera in cameras.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(encoder(codec, kbps, gop, size))
        factory.set_shared(True)
        if transport == "udp":
            pool = GstRtspServer.RTSPAddressPool()
            pool.add_range(host, host, UDP_PORTS[0], UDP_PORTS[1], 0)
            factory.set_address_pool(pool)
            factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP)
        else:
            factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        factory.connect("media-configure", lambda _f, media, cam=camera: cam.attach(media))
        mounts.add_factory(f"/{name}", factory)
    return server


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, start the cameras and the server, serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Serve video files as live, looping RTSP cameras.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8554, help="RTSP port, 0 for a free one (default: 8554)")
    parser.add_argument("--stream", type=StreamSpec.parse, action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--fps", type=int, default=0, help="frame rate of every stream (default: the file's)")
    parser.add_argument("--kbps", type=int, default=2000, help="H.264 bit rate (default: 2000)")
    parser.add_argument("--gop", type=int, default=10, help="frames between key frames (default: 10)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="h264", help="what the cameras send (default h264)")
    parser.add_argument(
        "--size", type=_size, default=None, help="WIDTHxHEIGHT the frames are scaled to (default: the file's)"
    )
    parser.add_argument(
        "--transport", choices=("tcp", "udp"), default="tcp", help="RTP over TCP (interleaved) or UDP (default tcp)"
    )
    parser.add_argument("--http", action="store_true", help="serve MJPEG over HTTP instead of RTSP")
    args = parser.parse_args(argv)
    if args.http and (args.codec != "h264" or args.transport != "tcp"):
        parser.error("--http serves MJPEG over HTTP: --codec and --transport apply to RTSP only")
    if not args.http and args.codec == "mjpeg" and args.size and max(args.size) > 2040:
        parser.error(f"--size {args.size[0]}x{args.size[1]}: RTP/JPEG carries at most 2040 x 2040 pixels")
    names = [s.name for s in args.stream]
    if len(set(names)) != len(names):
        parser.error(f"stream names must be unique, got {names}")

    Gst.init(None)
    loop = GLib.MainLoop()
    errors: list[str] = []

    def fail(message: str) -> None:
        log(message)
        errors.append(message)
        loop.quit()

    def shutdown(signame: str) -> bool:
        log(f"{signame}: stopping")
        loop.quit()
        return GLib.SOURCE_REMOVE

    # Dispatched once the loop runs: a signal during start-up stops the server right after its READY line.
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, shutdown, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, shutdown, "SIGINT")
    cameras = {s.name: Camera(s, args.fps, fail) for s in args.stream}
    try:
        for camera in cameras.values():
            camera.start()
    except RuntimeError as exc:
        log(str(exc))
        for camera in cameras.values():
            camera.stop()
        return 1
    if args.http:
        return _serve_http(cameras, args, loop, errors)
    server = build_server(cameras, args.host, args.port, args.kbps, args.gop, args.codec, args.size, args.transport)
    try:
        source_id = server.attach(None)
        error = "" if source_id else "the port is in use or the address is not local"
    except GLib.Error as exc:
        source_id, error = 0, exc.message
    if not source_id:
        log(f"cannot listen on {args.host}:{args.port}: {error}")
        for camera in cameras.values():
            camera.stop()
        return 1

    urls = " ".join(f"rtsp://{args.host}:{server.get_bound_port()}/{name}" for name in cameras)
    print(f"READY {urls}", flush=True)
    try:
        loop.run()
    finally:
        server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
        GLib.source_remove(source_id)
        for camera in cameras.values():
            camera.stop()
        log("stopped: " + ", ".join(f"{n} {c.frames} frames, {c.loops} loops" for n, c in cameras.items()))
    return 1 if errors else 0


def _serve_http(cameras: dict[str, Camera], args: argparse.Namespace, loop: GLib.MainLoop, errors: list[str]) -> int:
    """Serve every camera as MJPEG over HTTP until the loop stops; the exit status."""
    feeds = {name: MjpegFeed(camera, args.size) for name, camera in cameras.items()}
    try:
        httpd = build_http_server(feeds, args.host, args.port)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        for feed in feeds.values():
            feed.stop()
        for camera in cameras.values():
            camera.stop()
        return 1
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    port = httpd.server_address[1]
    print("READY " + " ".join(f"http://{args.host}:{port}/{name}" for name in cameras), flush=True)
    try:
        loop.run()
    finally:
        httpd.shutdown()
        httpd.server_close()
        for feed in feeds.values():
            feed.stop()
        for camera in cameras.values():
            camera.stop()
        log("stopped: " + ", ".join(f"{n} {c.frames} frames, {c.loops} loops" for n, c in cameras.items()))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
