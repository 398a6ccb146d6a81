"""Poll /health of every workstation every 0.1 s, all at once, and write one JSON line a round:
``prober.py [--ca CA --cert CERT --key KEY] OUT URL...``.

Runs on the controller (inside the lab's namespace); stops on SIGTERM. With ``--ca/--cert/--key`` it speaks mutual
TLS (the node's /health requires a client certificate of the store CA). Each line: {"t": epoch, "nodes": {url:
{"status", "role", "healthy", "cameras", "version", "token"} or {"status": null, "error"}}}.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

stop = False


def _stop(*_: Any) -> None:
    global stop
    stop = True


def probe(url: str, ctx: ssl.SSLContext | None) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=0.5, context=ctx) as r:
            body, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except Exception as exc:
        return {"status": None, "error": type(exc).__name__}
    try:
        h = json.loads(body)
    except ValueError:
        return {"status": status, "error": "not json"}
    keep = ("role", "healthy", "cameras", "version", "token")
    return {"status": status, **{k: h.get(k) for k in keep}}


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("out")
    p.add_argument("urls", nargs="+")
    args = p.parse_args()
    ctx = tls_context(args.ca, args.cert, args.key) if args.ca else None
    signal.signal(signal.SIGTERM, _stop)
    # Every URL of a round at once (one thread each): asked one after the other, a leader's answer and its
    # successor's could be a TLS handshake apart and read as two leaders at the same moment.
    with open(args.out, "a", buffering=1) as f, ThreadPoolExecutor(len(args.urls)) as pool:
        while not stop:
            t = time.time()
            answers = list(pool.map(lambda u: probe(u, ctx), args.urls))
            f.write(json.dumps({"t": t, "nodes": dict(zip(args.urls, answers, strict=True))}) + "\n")
            time.sleep(max(0.0, 0.1 - (time.time() - t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
