"""The ``edgepair`` command. Every expected failure prints one line (or one block) and exits non-zero, no traceback."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.config import load_config
from cluster.errors import ConfigError, EdgepairError, QueryError

if TYPE_CHECKING:
    from cluster.config import Config
    from cluster.pki import Identity
    from storage.kpimat import BlockTrust

log = logging.getLogger("edgepair")


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose >= 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    cams = ", ".join(f"{c.id} ({len(c.lines)} lines, {len(c.zones)} zones)" for c in cfg.cameras)
    print(
        f"{args.config}: valid. store {cfg.store.id} ({cfg.store.timezone}), cameras: {cams}; version {cfg.version()}"
    )
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from cluster import models

    if args.action == "install" and args.source:
        if not args.sha256:
            raise ConfigError("model install FILE-or-URL needs --sha256 (the file's SHA-256, from its publisher)")
        path, info = models.install_model_file(args.source, args.sha256, args.name)
        print(f"model installed: {path} (family {info.get('family')}, sha256 {info.get('sha256')}): set model.path")
    elif args.action == "install":
        info = models.install_default_model(force=args.force)
        print(f"default model installed: {models.default_model_path()} (sha256 {info['sha256']})")
    elif args.action == "path":
        print(models.default_model_path())
    else:
        info = models.verify_installed()
        print(json.dumps({"path": str(models.default_model_path()), **info}, indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cluster.runner import run_store
    from storage.views import format_table, run_query

    cfg = load_config(args.config)
    if args.node:
        cfg = cfg.model_copy(update={"node": args.node})
    result = run_store(cfg)
    print(f"\nedgepair run: store {cfg.store.id}, node {cfg.node}, {result.wall_s:.1f} s")
    print(f"inference: {result.inference.get('provider')} ({result.inference.get('frames')} frames)")
    for cam_id, s in result.cameras.items():
        err = f"  ERROR: {s['error']}" if s.get("error") else ""
        print(
            f"  {cam_id}: {s.get('frames', 0)} frames, {s.get('events', 0)} events, {s.get('segments', 0)} segments,"
            f" {s.get('dropped', 0)} dropped{err}"
        )
    data_dir, tz = cfg.storage.data_dir, cfg.store.timezone
    sql = "SELECT camera_id, line_id, sum(ins) AS ins, sum(outs) AS outs FROM traffic_hourly GROUP BY ALL ORDER BY ALL"
    print("\nVisitor counts per line (all data in " + str(data_dir) + "):")
    print(format_table(run_query(data_dir, tz, sql)))
    sql = "SELECT camera_id, zone_id, visits, round(median_dwell_s, 1) AS median_dwell_s FROM zone_dwell ORDER BY ALL"
    print("\nZone visits:")
    print(format_table(run_query(data_dir, tz, sql)))
    for cam_id in result.failed:
        print(f"edgepair: error: camera {cam_id}: {result.cameras[cam_id]['error']}", file=sys.stderr)
    return 1 if result.failed else 0


def _block_trust(cfg: Config) -> BlockTrust:
    """What the analyst commands check the node's materialised KPI blocks with (:mod:`storage.kpimat`): with
    ``security.tls`` the store's CA and workstations (the node signs its blocks); when the CA cannot be read here,
    no block is read (every KPI is computed from the events: slower, never a number nobody signed) and one warning
    says how to get them checked. Without TLS nothing is signed: the blocks' checksums only."""
    from cluster.pki import PKIError, Verifier
    from storage.kpimat import BlockTrust

    nodes = tuple(n.name for n in cfg.cluster.nodes) or None
    if not cfg.security.tls:
        return BlockTrust(nodes=nodes)
    ca = cfg.security.cert_dir / "ca.crt"
    retired = ca.parent / "ca-retired.crt"
    try:
        return BlockTrust(Verifier(cfg.store.id, [ca] + ([retired] if retired.is_file() else [])), nodes)
    except (OSError, ValueError, PKIError) as exc:
        log.warning(
            "materialised KPIs not used: the store CA %s cannot be read (%s), so their signatures cannot be checked;"
            " every KPI is computed from the events (slower): run as a user that can read it, or set"
            " security.cert_dir to the store's certificate folder",
            ca,
            exc,
        )
        return BlockTrust(use_blocks=False)


def _store_with_events(cfg: Config) -> Path:
    """The config's data dir, or one line saying it holds no event: no segment (and where a local pair keeps its
    data), or segments that all hold no event row (the analyst commands would print empty tables and charts)."""
    from cluster.pair import STATE
    from storage.views import has_events, has_segments

    data_dir = cfg.storage.data_dir
    if has_segments(data_dir):
        if has_events(data_dir):
            return data_dir
        raise QueryError(
            f"no events recorded in {data_dir} (its segments hold none: the cameras ran, but nobody crossed a line or"
            " left a zone yet): check the cameras' lines and zones in the config, or run the command again later"
        )
    hint = "run the store first (`edgepair run`, `edgepair pair up`), or point --config at the store's own YAML"
    # `pair up` / `make demo`: each workstation writes its own data dir, under the pair's (this one, or one beside
    # it: `make demo` runs the pair of pair.yaml in data/pair-demo while demo.yaml names data/demo).
    pair_dirs = [data_dir / "pair", *sorted(data_dir.parent.glob("*/pair"))[:20]]
    for state_file in (d / name for d in pair_dirs for name in (STATE, "pair.stopped.json")):
        try:
            if state_file.stat().st_size > 1_000_000:
                continue
            nodes = json.loads(state_file.read_text())["nodes"]
            node_config = next(iter(nodes.values()))["config"]
        except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError, RecursionError):
            continue
        if isinstance(node_config, str) and node_config.isprintable() and len(node_config) < 4096:
            hint = (
                f"the local pair of {state_file.parent} (`pair up`, `make demo`) keeps each workstation's data in its"
                f" own folder: use --config {node_config}"
            )
            break
    raise QueryError(f"no events recorded in {data_dir} (no segment under it): {hint}")


def cmd_query(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from storage.analytics import query_store
    from storage.kpis import StoreSetup
    from storage.views import format_table

    cfg = load_config(args.config)
    data_dir = _store_with_events(cfg)  # the views of `sql` and `analytics open`, KPI views included
    table = query_store(data_dir, StoreSetup.from_config(cfg), args.sql, trust=_block_trust(cfg))
    try:
        if args.format == "json":
            text = json.dumps(table.to_pylist(), default=str, indent=1)
        elif args.format == "csv":
            import pyarrow.csv as pacsv

            buf = io.BytesIO()
            pacsv.write_csv(table, buf)
            text = buf.getvalue().decode()
        else:
            text = format_table(table)
    except (OverflowError, ValueError, pa.ArrowException) as exc:  # a value Python or CSV cannot hold (year 294247)
        raise QueryError(
            f"query failed: a value of the result cannot be shown ({type(exc).__name__}: {str(exc)[:200]}):"
            " cast it to VARCHAR in the query"
        ) from None
    print(text, end="" if args.format == "csv" else "\n")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from cluster.sqlshell import run_shell
    from storage.analytics import StoreSession
    from storage.kpis import StoreSetup

    cfg = load_config(args.config)
    data_dir = _store_with_events(cfg)
    session = StoreSession(data_dir, StoreSetup.from_config(cfg), _block_trust(cfg))  # as `analytics open`
    try:
        return run_shell(session.current, f"{cfg.store.id} ({cfg.store.timezone})")
    finally:
        session.close()


def cmd_node(args: argparse.Namespace) -> int:
    from cluster.node import Node, node_run_dir, revoke_lease

    cfg = load_config(args.config)
    if args.agent:
        return Node(cfg, args.name).run()
    import failover.etcd_dcs  # noqa: F401  (imported now: revoking must not wait for the import once the agent died)
    from cluster.supervise import agent_argv, supervise

    cfg.node_config(args.name)  # fails now, with its message, on an unknown node name
    argv = ["node", "--config", str(args.config), "--name", args.name]
    return supervise(
        agent_argv(argv), node_run_dir(cfg, args.name), lambda lease: revoke_lease(cfg, args.name, lease), args.name
    )


def _etcd_target(args: argparse.Namespace) -> tuple[list[str], str, Identity | None]:
    """The store's etcd endpoints, its id, and the identity to present: a local pair's admin certificate, or on a
    workstation the admin ``root`` certificate when its cert dir holds one, else the config's node certificate."""
    if args.run_dir or not args.config:
        from cluster.pair import admin_identity, load_state

        state = load_state(Path(args.run_dir or "data/demo/pair"))
        return list(state["endpoints"]), str(state["store"]), admin_identity(state)
    cfg = load_config(args.config)
    if not cfg.cluster.etcd_endpoints:
        raise ConfigError(f"{args.config}: cluster.etcd_endpoints is empty: name the store's 3 etcd members")
    name = getattr(args, "as_name", None)
    if name is None and cfg.security.tls:
        from cluster.pki import ADMIN_NAME

        name = ADMIN_NAME if (cfg.security.cert_dir / f"{ADMIN_NAME}.crt").exists() else cfg.node
    return cfg.cluster.etcd_endpoints, cfg.store.id, cfg.identity(name)


def cmd_status(args: argparse.Namespace) -> int:
    from failover import admin

    endpoints, store, identity = _etcd_target(args)
    st = admin.status(endpoints, store, identity=identity)
    health = _member_health(endpoints, store, identity) if "members" in st else {}
    for name, h in health.items():
        if name in st["members"]:
            st["members"][name].update(h)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    print(admin.format_status(st))
    for name, h in sorted(health.items()):
        for reason in h["reasons"]:
            print(f"  {name}: {reason}")
        if h["failing"]:
            print(f"  {name}: cameras failing at their source from it: {', '.join(h['failing'])}")
    return 0


def _member_health(endpoints: list[str], store: str, identity: Identity | None) -> dict[str, dict[str, list[str]]]:
    """Each member's health reasons and failing cameras, as its member key says (cluster.health)."""
    from cluster.errors import DCSError
    from failover.etcd_dcs import EtcdDCS

    dcs = EtcdDCS(list(endpoints), store, ttl=2.0, timeout=1.0, identity=identity)
    try:
        members = dcs.get_cluster().members
    except DCSError:
        return {}
    finally:
        dcs.close()
    return {n: {"reasons": list(m.reasons), "failing": list(m.failing)} for n, m in members.items()}


def cmd_admin(args: argparse.Namespace) -> int:
    from failover import admin

    endpoints, store, identity = _etcd_target(args)
    if args.command == "switchover":
        admin.switchover(endpoints, store, to=args.to, identity=identity)
        print(f"switchover requested{' to ' + args.to if args.to else ''}")
    elif args.command == "rebalance":
        admin.rebalance(endpoints, store, identity=identity)
        print("rebalance requested: the leader spreads the cameras evenly over the healthy members, one move at a time")
    elif args.command == "pause":
        admin.pause(endpoints, store, identity=identity)
        print("reassignment paused: cameras stay where they are until `edgepair resume`")
    else:
        admin.resume(endpoints, store, identity=identity)
        print("reassignment resumed")
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    from cluster import pair

    if args.action == "demo":
        return pair.demo(Path(args.config or "cluster/examples/pair.yaml"), args.seconds)
    if args.action == "up":
        if not args.config:
            raise ConfigError("pair up needs --config (the store's YAML)")
        run_dir = Path(args.run_dir) if args.run_dir else None
        state = pair.pair_up(Path(args.config), run_dir)
        print(f"pair up: store {state['store']}, run dir {state['run_dir']}")
        for name, v in state["nodes"].items():
            print(f"  {name}: pid {v['pid']}, health {v['health']}, data {v['data_dir']}")
        print(f"  etcd: {', '.join(state['endpoints'])}")
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else pair.default_run_dir(load_config(args.config))
    if args.action == "down":
        pair.pair_down(run_dir)
        print(f"pair down: every process of {run_dir} stopped")
        return 0
    state = pair.load_state(run_dir)
    for name in state["nodes"]:
        h = pair.node_health(state, name) or {"healthy": False, "role": "unreachable"}
        print(f"{name}: {h.get('role')} healthy={h.get('healthy')} cameras={h.get('cameras')} token={h.get('token')}")
    return 0


def cmd_replication(args: argparse.Namespace) -> int:
    from storage.replstatus import format_replication_status, replication_status

    dirs: list[Path] = []
    if args.run_dir:
        from cluster.pair import load_state

        dirs = [Path(v["data_dir"]) for v in load_state(Path(args.run_dir))["nodes"].values()]
    elif args.config:
        dirs = [load_config(args.config).storage.data_dir]
    else:
        raise ConfigError("replication status needs --config (a node's store YAML) or --run-dir (a local pair)")
    for d in dirs:
        st = replication_status(d)
        print(json.dumps(st, indent=2, default=str) if args.json else format_replication_status(st))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from cluster.evaluate import evaluate, format_result
    from cluster.runner import resolve_model

    cfg = load_config(args.config)
    cam = cfg.cameras[0]
    with tempfile.TemporaryDirectory(prefix="edgepair-eval-") as tmp:
        cam = cam.model_copy(update={"source": str(Path(args.footage).resolve()), "playback": "fast", "loop": False})
        if args.fps:
            cam = cam.model_copy(update={"fps": args.fps})
        storage = cfg.storage.model_copy(update={"data_dir": Path(tmp)})
        cfg = cfg.model_copy(update={"cameras": [cam], "storage": storage})
        if args.model:
            cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": Path(args.model).resolve()})})
        if not Path(args.footage).exists():
            raise ConfigError(f"footage {args.footage} not found: pass --footage with a video file")
        if args.random_lines:
            from cluster.accuracy import cmd_evaluate_random

            return cmd_evaluate_random(args, cfg, resolve_model(cfg))
        result = evaluate(cfg, resolve_model(cfg), Path(args.gt) if args.gt else None)
    if args.json:
        print(
            json.dumps(
                {
                    "frames": result.frames,
                    "fps": result.fps,
                    "mot": result.mot,
                    "lines": result.lines,
                    "count_error_pct": result.count_error_pct,
                    "visits": result.visits,
                },
                indent=2,
            )
        )
    else:
        print(format_result(result))
    return 0


def cmd_analytics(args: argparse.Namespace) -> int:
    from storage import analytics
    from storage.kpis import StoreSetup

    if args.action == "open":
        if not args.config:
            raise ConfigError("analytics open needs --config (the store's YAML)")
        cfg = load_config(args.config)
        out = Path(args.out or cfg.storage.data_dir.parent / f"{cfg.store.id}.duckdb")
        path = analytics.open_analytics(
            _store_with_events(cfg), StoreSetup.from_config(cfg), out, trust=_block_trust(cfg)
        )
        print(f"{path}: open it from its folder: `cd {path.parent} && duckdb -readonly {path.name}` (views: events,")
        print("  visits, traffic_hourly, traffic_daily, occupancy, zone_dwell, capture_rate, bounce_rate, peak_hours,")
        print("  coverage; paths relative to that folder, so it can be copied whole); rebuild it to refresh")
        return 0
    if args.action == "export":
        import datetime as dt

        from storage.kpiexport import export_kpis

        if not (args.config and args.out and args.date_from and args.date_to):
            raise ConfigError("analytics export needs --config, --from, --to (local dates, YYYY-MM-DD) and --out DIR")
        cfg = load_config(args.config)
        try:
            d_from, d_to = dt.date.fromisoformat(args.date_from), dt.date.fromisoformat(args.date_to)
        except ValueError:
            raise ConfigError("--from and --to take local dates as YYYY-MM-DD") from None
        data_dir = _store_with_events(cfg)
        counts = export_kpis(
            data_dir, StoreSetup.from_config(cfg), d_from, d_to, Path(args.out), trust=_block_trust(cfg)
        )
        rows = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"store {cfg.store.id}: KPIs of {d_from}..{d_to} exported to {args.out} ({rows} rows)")
        return 0
    if not args.out or not args.sources:
        raise ConfigError("analytics merge needs --out DIR and the stores' export folders (or data dirs with --raw)")
    if args.raw:  # opt-in: every credited event of every store (track ids, exact times) leaves the stores
        stores = analytics.merge_stores([Path(p) for p in args.sources], Path(args.out))
        db = analytics.open_merged_analytics(Path(args.out), Path(args.out) / "stores.duckdb")
    else:
        from storage.kpiexport import merge_exports, open_hq

        stores = merge_exports([Path(p) for p in args.sources], Path(args.out))
        db = open_hq(Path(args.out), Path(args.out) / "hq.duckdb")
    print(f"merged {len(stores)} stores ({', '.join(stores)}) into {args.out}; open with `duckdb -readonly {db}`")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from cluster.report import write_report
    from storage.kpis import StoreSetup

    cfg = load_config(args.store)
    try:
        d_from, d_to = dt.date.fromisoformat(args.date_from), dt.date.fromisoformat(args.date_to)
    except ValueError:
        raise ConfigError("--from and --to take local dates as YYYY-MM-DD") from None
    data_dir = _store_with_events(cfg)
    html, csvs = write_report(data_dir, StoreSetup.from_config(cfg), d_from, d_to, Path(args.out), _block_trust(cfg))
    print(f"report: {html} (+ {len(csvs)} CSV files in {Path(args.out)})")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:

    from cluster.drill import run_drill
    from cluster.drill_report import format_report

    if bool(args.run_dir) == bool(args.store):
        raise ConfigError(
            "drill needs exactly one of --run-dir DIR (a pair started by `pair up`) or --store INVENTORY-or-TARGET "
            "(a deployed store: its Ansible inventory, or the target file drill.yml writes)"
        )

    def drill(target: Any, baseline: bool) -> dict[str, Any]:
        return run_drill(
            target,
            args.scenario,
            repeat=args.repeat,
            report=Path(args.report) if args.report else None,
            settle_s=args.settle_s,
            hold_s=args.hold_s,
            pre_s=args.pre_s,
            baseline=baseline,
            min_events=args.min_events,
        )

    if args.run_dir:
        rep = drill(Path(args.run_dir), not args.no_baseline)
    else:
        from cluster.drill_remote import RemoteStore

        with RemoteStore.open(args.store, pki_dir=args.pki) as target:
            baseline = not args.no_baseline
            if baseline and target.config_path() is None:
                print(
                    f"edgepair: {target.name}: no baseline replay (the cameras' frames cannot be replayed here); "
                    "gaps, lost windows, double running, crediting and tokens are measured",
                    file=sys.stderr,
                )
                baseline = False
            rep = drill(target, baseline)
    print(format_report(rep))
    return 0 if rep["summary"]["ok"] else 1


def cmd_certs(args: argparse.Namespace) -> int:
    from cluster.pki import ROLES, CertDir

    if not args.dir:
        raise ConfigError("certs needs --dir: the store's certificate folder (e.g. /etc/edgepair/pki)")
    certs = CertDir(args.dir)
    if args.action == "init":
        if not args.store:
            raise ConfigError("certs init needs --store: the store id the CA is for")
        info = certs.init(args.store, days=args.days or 3650)
        print(f"{certs.path}: CA of store {info.store} made, valid until {info.not_after:%Y-%m-%d}")
        print(f"  keep {certs.path / 'ca.key'} on this machine only; hosts get ca.crt and their own certificate")
        return 0
    if args.action in ("issue", "rotate"):
        if not args.name:
            raise ConfigError(f"certs {args.action} needs the host's name (e.g. ws-a, witness, root)")
        if args.action == "issue":
            role = args.role or ("admin" if args.name == "root" else None)
            if role is None:
                raise ConfigError(f"certs issue needs --role, one of {', '.join(ROLES)}")
            info = certs.issue(args.name, role, args.host, days=args.days or 825)
        else:
            info = certs.rotate(args.name, days=args.days or 825)
        print(
            f"{certs.cert_path(info.name)}: {info.role} {info.name} of store {info.store},"
            f" hosts {', '.join(info.hosts) or '-'}, valid until {info.not_after:%Y-%m-%d}"
        )
        return 0
    if args.action == "rotate-ca":
        if args.finish:
            info = certs.finish_ca_rotation()
            print(f"{certs.path}: CA rotation finished; trusted CA now {info.fingerprint[:16]} only")
        else:
            infos = certs.rotate_ca(days=args.days or 3650)
            print(
                f"{certs.path}: a new CA joined the bundle; re-issued {', '.join(i.name for i in infos) or 'nothing'}"
            )
            print("  install ca.crt and the new host certificates on every host, restart them one at a time,")
            print("  then run `edgepair certs rotate-ca --finish` and install ca.crt once more")
        return 0
    infos = certs.show()
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=2))
        return 0
    for i in infos:
        d = i.to_json()
        what = "CA" if i.is_ca else f"{i.role} {i.name}"
        print(
            f"{what:20} store {i.store}  until {i.not_after:%Y-%m-%d} ({d['days_left']} days)"
            f"  {', '.join(i.hosts) or ''}  sha256 {i.fingerprint[:16]}"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """An auditor's check: every file's checksum and its signature by a workstation of the store (read only)."""
    from cluster.pki import Verifier
    from storage.verify import verify_data_dir

    verifier = None
    nodes = None
    if args.config:
        cfg = load_config(args.config)
        data_dir = Path(args.data_dir) if args.data_dir else cfg.storage.data_dir
        ca = Path(args.ca) if args.ca else cfg.security.cert_dir / "ca.crt"
        store = cfg.store.id
        nodes = [n.name for n in cfg.cluster.nodes] or None
    elif args.data_dir and args.ca and args.store:
        data_dir, ca, store = Path(args.data_dir), Path(args.ca), args.store
    else:
        raise ConfigError("verify needs --config (a store YAML), or --data-dir with --ca and --store")
    if not data_dir.is_dir():
        raise ConfigError(f"data dir {data_dir} not found: pass --data-dir with a store's data folder")
    retired = ca.parent / "ca-retired.crt"
    verifier = Verifier(store, [ca] + ([retired] if retired.is_file() else []))
    report = verify_data_dir(data_dir, verifier, nodes=nodes)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(report.summary())
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgepair", description="On-premise store analytics on a workstation pair.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    from cluster.node import VERSION

    p.add_argument("--version", action="version", version=f"edgepair {VERSION}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_store_commands(sub)
    _add_cluster_commands(sub)
    _add_tool_commands(sub)
    _add_analyst_commands(sub)
    _add_operator_commands(sub)
    return p


def _add_store_commands(sub: Any) -> None:
    """One workstation and its store: validate-config, model, run, node, pair."""
    s = sub.add_parser("validate-config", help="check a store config and print every error with its location")
    s.add_argument("config", nargs="?", default=None, help="store YAML (or use --config)")
    s.add_argument("--config", dest="config_opt", default=None)
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("model", help="the default detector: install (convert once, cache), info, path")
    s.add_argument("action", choices=["install", "info", "path"])
    s.add_argument("--force", action="store_true", help="convert again even if a valid copy is cached")
    s.add_argument("source", nargs="?", default=None, help="install: an ONNX file path or http(s) URL instead")
    s.add_argument("--sha256", default=None, help="install SOURCE: the file's expected SHA-256 (required)")
    s.add_argument("--name", default=None, help="install SOURCE: cache name (default: the file's stem)")
    s.set_defaults(func=cmd_model)

    s = sub.add_parser("run", help="run one workstation on every camera of the config (no etcd)")
    s.add_argument("--config", required=True)
    s.add_argument("--node", default=None, help="node name (default: node: in the config)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("node", help="run this workstation's agent: etcd membership, cameras, health (long-running)")
    s.add_argument("--config", required=True)
    s.add_argument("--name", required=True, help="this workstation's name in cluster.nodes")
    s.add_argument(
        "--agent",
        action="store_true",
        help="run the agent itself, without its supervisor (the supervisor stops the agent's cameras and revokes"
        " its etcd lease the moment the agent dies, so the peer takes over at once: cluster/supervise.py)",
    )
    s.set_defaults(func=cmd_node)

    s = sub.add_parser("pair", help="a whole store on this machine: 3 etcd members and two nodes on loopback")
    s.add_argument("action", choices=["up", "down", "status", "demo"])
    s.add_argument("--seconds", type=float, default=90.0, help="demo: seconds of footage to process")
    s.add_argument("--config", default=None, help="store YAML")
    s.add_argument("--run-dir", default=None, help="where pids, logs and node data go (default: <data_dir>/pair)")
    s.set_defaults(func=cmd_pair)


def _add_cluster_commands(sub: Any) -> None:
    """The pair's coordination: status, switchover, rebalance, pause, resume, replication."""
    for name, text in (
        ("status", "leader, members, assignment and tokens of the store"),
        ("switchover", "hand leadership over now (revoke, not wait for expiry)"),
        ("rebalance", "spread the cameras evenly again (after a per-camera move, for example)"),
        ("pause", "freeze camera reassignment for maintenance"),
        ("resume", "allow camera reassignment again"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--config", default=None, help="store YAML naming cluster.etcd_endpoints")
        s.add_argument("--run-dir", default=None, help="a local pair's run dir instead of --config")
        s.add_argument(
            "--as", dest="as_name", default=None, help="certificate to present (default: root if held, else the node)"
        )
        if name == "status":
            s.add_argument("--json", action="store_true")
            s.set_defaults(func=cmd_status)
        else:
            if name == "switchover":
                s.add_argument("--to", default=None, help="the node to hand over to (default: the other one)")
            s.set_defaults(func=cmd_admin)

    s = sub.add_parser("replication", help="replication between the pair: lag (seconds, segments), last error")
    s.add_argument("action", choices=["status"])
    s.add_argument("--config", default=None)
    s.add_argument("--run-dir", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_replication)


def _add_tool_commands(sub: Any) -> None:
    """Installers' tools: evaluate, acceptance, calibrate, camera, doctor, survey, bundle."""
    s = sub.add_parser("evaluate", help="tracking and counting accuracy against MOT ground truth (production path)")
    s.add_argument("--footage", required=True, help="video file")
    s.add_argument("--gt", default=None, help="MOT ground truth (frame,id,x,y,w,h,flag,...)")
    s.add_argument("--config", required=True, help="store YAML: its first camera's lines, zones, tracking, model")
    s.add_argument("--model", default=None, help="ONNX detector (default: the config's)")
    s.add_argument("--fps", type=float, default=None, help="frames a second processed (default: the source's)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--random-lines", type=int, default=0, help="count on N random lines instead (cluster/accuracy.py)")
    s.add_argument("--random-zones", type=int, default=0, help="with --random-lines: also N random zones")
    s.add_argument("--seed", type=int, default=1, help="with --random-lines: the first seed")
    s.add_argument("--seeds", type=int, default=1, help="with --random-lines: how many seeds from --seed")
    s.set_defaults(func=cmd_evaluate)

    from cluster import acceptance, bundle, calibrate, camera_cli, doctor, survey

    acceptance.add_parser(sub)
    calibrate.add_parser(sub)
    camera_cli.add_parser(sub)
    doctor.add_parser(sub)
    survey.add_parser(sub)
    bundle.add_parser(sub)


def _add_analyst_commands(sub: Any) -> None:
    """The analyst's: analytics, report, verify, query, sql."""
    s = sub.add_parser(
        "analytics",
        help="the analyst's DuckDB file (open), a store's KPI tables for HQ (export), HQ's database (merge)",
    )
    s.add_argument("action", choices=["open", "export", "merge"])
    s.add_argument("--config", default=None, help="open, export: the store YAML")
    s.add_argument("--out", default=None, help="open: the .duckdb file; export, merge: the output folder")
    s.add_argument("--from", dest="date_from", default=None, help="export: first local date, YYYY-MM-DD")
    s.add_argument("--to", dest="date_to", default=None, help="export: last local date, YYYY-MM-DD")
    s.add_argument(
        "--raw", action="store_true", help="merge: data dirs instead of exports (opt-in: visitor rows leave the stores)"
    )
    s.add_argument("sources", nargs="*", help="merge: the stores' export folders (data dirs with --raw)")
    s.set_defaults(func=cmd_analytics)

    s = sub.add_parser("report", help="self-contained HTML report with charts, and the same numbers as CSV")
    s.add_argument("--store", "--config", dest="store", required=True, help="the store YAML")
    s.add_argument("--from", dest="date_from", required=True, help="first local date, YYYY-MM-DD")
    s.add_argument("--to", dest="date_to", required=True, help="last local date, YYYY-MM-DD")
    s.add_argument("--out", default="report", help="output folder (default: ./report)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("verify", help="check every data file's checksum and signature (an auditor's proof; read only)")
    s.add_argument("--config", default=None, help="the store YAML (its data dir, store id and CA)")
    s.add_argument("--data-dir", default=None, help="the data folder (default: the config's)")
    s.add_argument("--ca", default=None, help="the store CA bundle, ca.crt (default: the config's cert dir)")
    s.add_argument("--store", default=None, help="the store id, with --data-dir and --ca")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("query", help="run SQL over the store's dataset (views: events, visits, traffic_hourly, ...)")
    s.add_argument("sql")
    s.add_argument("--config", required=True)
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("sql", help="an interactive SQL shell on the store's views (read only), for analysts")
    s.add_argument("--config", required=True)
    s.set_defaults(func=cmd_sql)


def _add_operator_commands(sub: Any) -> None:
    """Operators': drill, certs."""
    from cluster.drill import SCENARIOS

    s = sub.add_parser(
        "drill", help="inject a fault into a local pair or a deployed store; report takeover, gaps and lost events"
    )
    s.add_argument("scenario", choices=SCENARIOS)
    s.add_argument("--run-dir", default=None, help="a local pair: its run dir (pair.json)")
    s.add_argument(
        "--store",
        default=None,
        help="a deployed store: its Ansible inventory, or a drill target file (drill.yml writes one); over SSH",
    )
    s.add_argument("--pki", default=None, help="--store: the store's certificate folder here (ca.crt, root.crt/.key)")
    s.add_argument("--repeat", type=int, default=1, help="run N times; the report gives median and max")
    s.add_argument("--report", default=None, help="write the JSON report here")
    s.add_argument("--pre-s", type=float, default=15.0, help="seconds watched before the fault")
    s.add_argument("--settle-s", type=float, default=20.0, help="seconds to run after recovery before measuring")
    s.add_argument("--hold-s", type=float, default=5.0, help="how long a freeze, cut or lost quorum lasts")
    s.add_argument("--no-baseline", action="store_true", help="skip the in-process baseline replay")
    s.add_argument(
        "--min-events",
        type=int,
        default=5,
        help="events per camera the baseline must compare (else the run watches longer, then is inconclusive)",
    )
    s.set_defaults(func=cmd_drill)

    s = sub.add_parser("certs", help="the store's CA and host certificates: init, issue, rotate, rotate-ca, show")
    s.add_argument("action", choices=["init", "issue", "rotate", "rotate-ca", "show"])
    s.add_argument("name", nargs="?", default=None, help="issue/rotate: the host's name (ws-a, ws-b, witness, root)")
    s.add_argument("--dir", required=True, help="the certificate folder (holds ca.crt; ca.key where certs are made)")
    s.add_argument("--store", default=None, help="init: the store id")
    s.add_argument("--role", default=None, help="issue: node (a workstation), witness, or admin (name root)")
    s.add_argument("--host", action="append", default=[], help="issue: an IP or DNS name the host is reached at")
    s.add_argument("--days", type=int, default=None, help="validity (default: CA 3650, host 825)")
    s.add_argument("--finish", action="store_true", help="rotate-ca: drop the old CA once every host has new files")
    s.add_argument("--json", action="store_true", help="show: as JSON")
    s.set_defaults(func=cmd_certs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse takes positionals in one run: `analytics merge --out DIR SRC...` left the sources after the
        # option unmatched. They are the command's sources; anything else is refused as parse_args would.
        if getattr(args, "func", None) is cmd_analytics and not any(e.startswith("-") for e in extra):
            args.sources = [*args.sources, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is cmd_validate:
        args.config = args.config or args.config_opt
        if not args.config:
            parser.error("validate-config needs the path of a store config")
    setup_logging(-1 if args.quiet else args.verbose)
    from cluster.redact import install_log_redaction, redact

    install_log_redaction()
    try:
        return int(args.func(args))
    except EdgepairError as exc:
        print(f"edgepair: error: {redact(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgepair: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
