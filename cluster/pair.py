"""``edgepair pair up|down|status``: a whole store on one machine, for demos, drills and tests.

``up`` starts 3 etcd members (ws-a, ws-b, witness) and two node agents (ws-a, ws-b) on loopback, each node with its
own data dir, Ray and ports, and records every pid in ``<run_dir>/pair.json``; ``down`` stops them by pid (SIGTERM,
which drains, then SIGKILL after a bound), never by name. Each node gets a derived config in the run dir: the
store's cameras and settings, with ``cluster`` filled in for the local etcd and ports.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cluster.config import Config, load_config
from cluster.errors import EdgepairError

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

NODES = ("ws-a", "ws-b")
STATE = "pair.json"


def default_run_dir(config: Config) -> Path:
    return config.storage.data_dir / "pair"


def _free_port() -> int:
    from failover.etcd_cluster import free_port

    return free_port()


def node_config(
    config: Config,
    name: str,
    endpoints: list[str],
    ports: dict[str, dict[str, int]],
    base: Path,
    witness: str | None = None,
    pki: Path | None = None,
) -> dict:
    scheme = "https" if pki is not None else "http"

    def url(e: str) -> str:
        return f"{scheme}://{e}" if "://" not in e else e

    data = json.loads(config.model_dump_json())
    data["node"] = name
    data["storage"]["data_dir"] = str(base / name / "data")
    data["cluster"] = {
        "etcd_endpoints": [url(e) for e in endpoints],
        "raft_leader": url(witness) if witness else None,
        "ttl_s": config.cluster.ttl_s,
        "nodes": [
            {"name": n, "host": "127.0.0.1", "flight_port": p["flight"], "metrics_port": p["metrics"], "capacity": 16}
            for n, p in ports.items()
        ],
    }
    data["security"] = {"tls": pki is not None, "cert_dir": str(pki or base / "pki"), "metrics": "tls"}
    # The dump holds no secret (the loader keeps user info and passwords out of the model): the cameras' credentials
    # from the store's credentials file or URLs go to a file of the node's own, mode 0600 from its creation. Those
    # from the environment stay there (the node process inherits it).
    creds = {c.id: r for c in config.cameras if (r := config.credential_source(c.id).resolve(environ={})) is not None}
    data.pop("credentials_file", None)
    if creds:
        from cluster.credentials import write_credentials_file

        path = base / f"{name}.cameras.yaml"
        write_credentials_file(path, creds)
        data["credentials_file"] = str(path)
    if data["model"]["path"] is None:
        del data["model"]["path"]
    return data


def make_pki(run_dir: Path, store_id: str) -> Path:
    """The local pair's store CA and certificates, made on the fly in ``<run_dir>/pki`` (kept across restarts).

    One certificate per etcd member and node (ws-a, ws-b, witness), all for 127.0.0.1 (everything listens on
    loopback), and the admin ``root`` certificate that ``pair`` uses for etcd's auth set-up, health polling and the
    operator commands. A CA of another store in the folder is refused.
    """
    from cluster.pki import CA_CERT, CertDir

    pki = CertDir(run_dir / "pki")
    if not (pki.path / CA_CERT).exists():
        pki.init(store_id)
    elif pki.store_id() != store_id:
        raise EdgepairError(
            f"{pki.path} holds the CA of store {pki.store_id()}, not of {store_id}: use another --run-dir"
        )
    for name, role in ((*NODES[:1], "node"), (NODES[1], "node"), ("witness", "witness"), ("root", "admin")):
        if not pki.cert_path(name).exists():
            pki.issue(name, role, ["127.0.0.1", "localhost"])
    return pki.path


def pair_up(config_path: Path, run_dir: Path | None = None, wait_s: float = 60.0) -> dict[str, Any]:
    from failover.etcd_cluster import EtcdCluster

    config = load_config(config_path)
    run_dir = (run_dir or default_run_dir(config)).resolve()
    state_file = run_dir / STATE
    if state_file.exists() and any(_alive(p) for p in _pids(json.loads(state_file.read_text()))):
        raise EdgepairError(f"a pair is already running from {run_dir}: run `edgepair pair down` first")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    pki: Path | None = None
    if config.security.tls:
        pki = make_pki(run_dir, config.store.id)
    else:
        log.warning(
            "security.tls is false in %s: this pair runs etcd, replication and /health in PLAIN TEXT without"
            " authentication, and its segments are not signed (an opt-out for a lab; never on a store network)",
            config_path,
        )
    etcd = EtcdCluster(
        run_dir / "etcd", names=(*NODES, "witness"), cert_dir=pki, store_id=config.store.id, node_users=NODES
    )
    etcd.start()
    ports = {n: {"flight": _free_port(), "metrics": _free_port()} for n in NODES}
    state: dict[str, Any] = {
        "config": str(Path(config_path).resolve()),
        "run_dir": str(run_dir),
        "store": config.store.id,
        "timezone": config.store.timezone,
        "etcd": {n: {"pid": etcd.pid(n), "endpoint": etcd.endpoint(n)} for n in etcd.members},
        "nodes": {},
        "endpoints": etcd.endpoints,
        "pki": str(pki) if pki else None,
    }
    _write_state(state_file, state)  # from here on `pair down` can stop whatever was started
    try:
        _start_nodes(config, state, state_file, ports, wait_s)
    except BaseException:
        pair_down(run_dir)
        raise
    return state


def _start_nodes(
    config: Config, state: dict[str, Any], state_file: Path, ports: dict[str, dict[str, int]], wait_s: float
) -> None:
    run_dir = Path(state["run_dir"])
    for i, name in enumerate(NODES):
        if i:  # one node at a time: the first one's Ray is up before the second one's starts
            _wait_healthy({**state, "nodes": dict(list(state["nodes"].items())[:i])}, wait_s)
        pki = Path(state["pki"]) if state.get("pki") else None
        cfg = node_config(
            config, name, state["endpoints"], ports, run_dir, witness=state["etcd"]["witness"]["endpoint"], pki=pki
        )
        cfg_path = run_dir / f"{name}.yaml"
        from cluster.pki import write_private

        write_private(cfg_path, yaml.safe_dump(cfg, sort_keys=False).encode())
        log_path = run_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cluster.cli", "node", "--config", str(cfg_path), "--name", name],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(Path(__file__).resolve().parents[1]),
            )
        state["nodes"][name] = {
            "pid": proc.pid,
            "config": str(cfg_path),
            "log": str(log_path),
            "data_dir": cfg["storage"]["data_dir"],
            "health": f"{'https' if pki else 'http'}://127.0.0.1:{ports[name]['metrics']}/health",
            "flight": f"{'grpc+tls' if pki else 'grpc'}://127.0.0.1:{ports[name]['flight']}",
        }
        _write_state(state_file, state)
    _wait_healthy(state, wait_s)
    # The nodes started one after the other, so the first one took every camera (assignment is sticky):
    # ask the leader to spread them now that both are up.
    from failover.admin import rebalance

    rebalance(state["endpoints"], state["store"], identity=admin_identity(state))


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise EdgepairError(
            f"no pair is running from {run_dir} (no {STATE}): start one with `edgepair pair up`"
        ) from None


def admin_identity(state: dict[str, Any]) -> Identity | None:
    """The admin (``root``) identity of a local pair, from its run dir's certificates; None for a plain-text pair."""
    if not state.get("pki"):
        return None
    from cluster.pki import Identity

    return Identity.load(state["pki"], "root")


_contexts: dict[str, Any] = {}


def node_health(state: dict[str, Any], node: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """A node's /health document (None when it does not answer), over mutual TLS with the pair's admin identity."""
    url = state["nodes"][node]["health"]
    ctx = None
    if state.get("pki"):
        ctx = _contexts.get(state["pki"])
        if ctx is None:
            identity = admin_identity(state)
            assert identity is not None
            ctx = _contexts.setdefault(state["pki"], identity.client_ssl_context())
    return health(url, timeout, ssl_context=ctx)


def health(url: str, timeout: float = 1.0, ssl_context: Any = None) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ssl_context) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def _wait_healthy(state: dict[str, Any], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        hs = {n: node_health(state, n) for n in state["nodes"]}
        if all(h and h.get("healthy") for h in hs.values()):
            return
        for n, v in state["nodes"].items():
            if not _alive(v["pid"]):
                tail = Path(v["log"]).read_text(errors="replace").strip().splitlines()[-5:]
                raise EdgepairError(
                    f"node {n} exited during start-up; its log {v['log']} ends with:\n" + "\n".join(tail)
                )
        time.sleep(0.5)
    raise EdgepairError(f"the pair did not become healthy within {wait_s:.0f} s: see the logs in {state['run_dir']}")


def _pids(state: dict[str, Any]) -> list[int]:
    pids = [v["pid"] for v in state.get("nodes", {}).values()]
    pids += [v["pid"] for v in state.get("etcd", {}).values() if v.get("pid")]
    return pids


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a node's Ray processes), found through /proc."""
    parents = _parents()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        cur = frontier.pop()
        kids = [c for c, p in parents.items() if p == cur]
        found.extend(kids)
        frontier.extend(kids)
    return found


def stop_pid(pid: int, term_timeout: float, sig: int = signal.SIGTERM) -> None:
    if not _alive(pid):
        return
    kids = descendants(pid)
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + term_timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in [pid, *kids]:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def pair_down(run_dir: Path, converge_s: float = 60.0) -> dict[str, Any]:
    """Stop the pair's nodes and etcd members by pid, then bring the two data dirs level (at most ``converge_s``)."""
    state = load_state(run_dir)
    for name, v in state["nodes"].items():
        log.info("stopping node %s (pid %d)", name, v["pid"])
        stop_pid(v["pid"], term_timeout=45)
    for name, v in state["etcd"].items():
        if v.get("pid"):
            log.info("stopping etcd member %s (pid %d)", name, v["pid"])
            stop_pid(v["pid"], term_timeout=5)
    (run_dir / STATE).rename(run_dir / "pair.stopped.json")
    try:
        converge_copies(state, converge_s)
    except Exception as exc:  # the pair is down either way; the next start converges the copies
        log.warning("the copies were not converged after the pair stopped: %s", exc)
    return state


def converge_copies(state: dict[str, Any], bound_s: float = 60.0) -> int:
    """After the pair stopped, make the two data dirs identical with the replication protocol itself.

    The node stopped last could not push its final segments to the one stopped first; a restarted pair's
    anti-entropy would copy them, and this does the same now: a Replicator on each data dir (fresh loopback ports),
    until both live catalogs are identical (bounded). Returns the number of files copied.
    """
    from storage.replication import Replicator

    nodes = list(state["nodes"].items())
    if len(nodes) != 2:
        return 0
    ports = [_free_port(), _free_port()]
    identities: list[Identity | None] = [None, None]
    if state.get("pki"):
        from cluster.pki import Identity

        identities = [Identity.load(state["pki"], name) for name, _v in nodes]
    reps = [
        Replicator(
            Path(v["data_dir"]),
            state["store"],
            name,
            f"grpc://127.0.0.1:{ports[1 - i]}",
            port=ports[i],
            anti_entropy_s=0.5,
            identity=identities[i],
            nodes=[n for n, _v in nodes] if identities[i] is not None else None,
        )
        for i, (name, v) in enumerate(nodes)
    ]
    for r in reps:
        r.start()
    try:
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            a, b = (r.live_catalog() for r in reps)
            if a == b and all(r.status()["peers"][r.peer_url]["last_sync"] for r in reps):
                break
        else:
            log.warning(
                "the two copies still differ %.0f s after the pair stopped; the next start converges them", bound_s
            )
    finally:
        for r in reps:
            r.stop()
    copied = sum(r.peer.pulled for r in reps)
    log.info("copies converged after the pair stopped: %d files copied", copied)
    return copied


def demo(config_path: Path, seconds: float, out: Any = None) -> int:
    """``make demo``: bring the pair up, let it process ``seconds`` of footage, print the KPIs, bring it down."""
    from storage.views import format_table, run_query

    out = out or sys.stdout
    state = pair_up(config_path)
    run_dir = Path(state["run_dir"])
    try:
        print(f"pair up: etcd {', '.join(state['endpoints'])}", file=out)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            line = []
            for name in state["nodes"]:
                h = node_health(state, name) or {}
                line.append(f"{name} {h.get('role', '?')} {','.join(h.get('cameras') or []) or '-'}")
            print(f"  {int(seconds - (deadline - time.monotonic()))} s: " + "; ".join(line), file=out)
    finally:
        pair_down(run_dir)
    config = load_config(config_path)
    tz = config.store.timezone
    print(f"\nStore {config.store.id} ({tz}): KPIs from DuckDB over each workstation's replicated copy", file=out)
    counts = {}
    for name, v in state["nodes"].items():
        t = run_query(Path(v["data_dir"]), tz, "SELECT count(*) AS n FROM events")
        counts[name] = t.column("n")[0].as_py()
    print(
        f"events credited: {counts} (the two copies {'agree' if len(set(counts.values())) == 1 else 'DIFFER'})",
        file=out,
    )
    data_dir = Path(next(iter(state["nodes"].values()))["data_dir"])
    queries = [
        (
            "Visitors per line",
            "SELECT camera_id, line_id, sum(ins) AS ins, sum(outs) AS outs FROM traffic_hourly "
            "GROUP BY ALL ORDER BY ALL",
        ),
        (
            "Zone visits",
            "SELECT camera_id, zone_id, visits, round(median_dwell_s, 1) AS median_dwell_s, "
            "round(p90_dwell_s, 1) AS p90_dwell_s FROM zone_dwell ORDER BY ALL",
        ),
        (
            "Coverage (seconds processed per camera and node)",
            "SELECT camera_id, node, count(*) AS windows, "
            "min(window_start) AS first, max(window_end) AS last FROM windows WHERE credited GROUP BY ALL ORDER BY ALL",
        ),
    ]
    for title, sql in queries:
        print(f"\n{title}:", file=out)
        print(format_table(run_query(data_dir, tz, sql)), file=out)
    return 0
