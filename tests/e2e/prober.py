"""Poll /health of every workstation every 0.1 s and write one JSON line a round: ``prober.py OUT URL...``.

Runs on the controller (inside the lab's namespace); stops on SIGTERM. Each line: {"t": epoch, "nodes": {url:
{"status", "role", "healthy", "cameras", "version", "token"} or {"status": null, "error"}}}.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any

stop = False


def _stop(*_: Any) -> None:
    global stop
    stop = True


def probe(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
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


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    out, urls = sys.argv[1], sys.argv[2:]
    with open(out, "a", buffering=1) as f:
        while not stop:
            t = time.time()
            f.write(json.dumps({"t": t, "nodes": {u: probe(u) for u in urls}}) + "\n")
            time.sleep(max(0.0, 0.1 - (time.time() - t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
