"""Pure checks of single config values, each returning or raising why a value cannot be used (no pydantic).

Simple polygons (no edge crosses another, none folds back), camera sources (a known URL scheme with a host and a
valid port, or a file path), etcd endpoints (the rules of ``failover.etcd_tls.parse_endpoint``). Messages never echo
the user info of a URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from cluster.redact import split_userinfo, strip_userinfo

Point = tuple[float, float]
MAX_PATH = 4096  # PATH_MAX on Linux
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]|[A-Za-z0-9]([A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?)$")


def _orient(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool:
    """True when segments ab and cd share at least one point (crossing, touching or overlapping)."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if ((o1 > 0 and o2 < 0) or (o1 < 0 and o2 > 0)) and ((o3 > 0 and o4 < 0) or (o3 < 0 and o4 > 0)):
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def self_intersection(pts: list[Point]) -> str:
    """Why the closed polygon ``pts`` is not simple, or "" when it is (O(n^2), n <= 256)."""
    n = len(pts)
    seen: dict[Point, int] = {}
    for i, p in enumerate(pts):
        if p in seen:
            return f"vertex {i} repeats vertex {seen[p]}"
        seen[p] = i
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        a, b = edges[i]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # the last edge is adjacent to the first
            if _segments_meet(a, b, *edges[j]):
                return f"edge {i} (vertices {i}-{(i + 1) % n}) crosses edge {j} (vertices {j}-{(j + 1) % n})"
    return ""


def fold_back(pts: list[Point]) -> str:
    """Which edge folds back onto the one before it (a spike of no width), or ""."""
    n = len(pts)
    for i in range(n):
        a, b, d = pts[i], pts[(i + 1) % n], pts[(i + 2) % n]
        if _orient(a, b, d) == 0 and (b[0] - a[0]) * (d[0] - b[0]) + (b[1] - a[1]) * (d[1] - b[1]) < 0:
            return f"edge {(i + 1) % n} folds back onto edge {i}"
    return ""


def check_source(source: str) -> str:
    """A stream URL of a known scheme with a host and a valid port, or a file path; messages never echo user info."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", source)
    if m is None:
        typo = re.match(r"^(rtsps?|https?):(?!//)", source, re.IGNORECASE)
        if typo:  # 'rtsp:user:pw@host/x' would be taken for a file path, and shown as one, user info and all
            raise ValueError(
                f"{typo.group(1).lower()}: without '//' is not a URL: write {typo.group(1).lower()}://host/..."
            )
        if "://" in source:
            raise ValueError("neither a URL of a known scheme (rtsp://, rtsps://, http://, https://) nor a file path")
        if not source.strip() or "\x00" in source or len(source) > MAX_PATH:
            raise ValueError(f"a video file path must be 1 to {MAX_PATH} characters, without NUL bytes")
        return source
    scheme = m.group(1)
    if scheme not in STREAM_SCHEMES:
        hint = " (write the scheme in lower case)" if scheme.lower() in STREAM_SCHEMES else ""
        raise ValueError(
            f"URL scheme {scheme[:16]!r} is not supported{hint}:"
            " use rtsp://, rtsps://, http://, https:// or a file path"
        )
    if any(c.isspace() for c in source):
        raise ValueError("a stream URL must not contain spaces: %-encode them (%20)")
    if "\x00" in source:  # OpenCV hands FFmpeg a C string: it would open the URL cut at the NUL
        raise ValueError("a stream URL must not contain NUL bytes")
    after_host = re.split(r"[/?#]", split_userinfo(source)[0][m.end() :], maxsplit=1)[1:]
    if after_host and "@" in after_host[0].split("?", 1)[0]:
        raise ValueError(
            "the URL has an '@' after its host: a password holding '/', '?' or '#' must be %-encoded, or better moved"
            " to the credentials file"
        )
    try:
        parts = urlsplit(source)
        parts.port  # noqa: B018 - raises ValueError on a port out of 0..65535
    except ValueError:
        raise ValueError(
            f"{strip_userinfo(source)[:200]} is not a valid URL (check the host and the port, 1..65535)"
        ) from None
    if not parts.hostname:
        raise ValueError(f"{strip_userinfo(source)[:200]} names no host")
    if parts.port == 0:
        raise ValueError(f"{strip_userinfo(source)[:200]}: port 0 is not a port to connect to")
    return source


def endpoint_problem(endpoint: str) -> str:
    """Why an etcd endpoint cannot be dialled (the rules of ``failover.etcd_tls.parse_endpoint``), or ""."""
    usage = "write it https://host:port, http://host:port or host:port"
    if len(endpoint) > 300:
        return f"an etcd endpoint is at most 300 characters: {usage}"
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "", endpoint
    if scheme not in ("", "http", "https"):
        return f"etcd endpoint {strip_userinfo(endpoint)[:64]!r}: scheme {scheme[:16]!r} is not http or https: {usage}"
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not HOST.match(host) or not port.isdigit() or not 1 <= int(port[:6]) <= 65535:
        return f"etcd endpoint {strip_userinfo(endpoint)[:64]!r} is not host:port with a port 1..65535: {usage}"
    return ""
