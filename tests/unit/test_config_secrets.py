"""Camera credentials apart from the config: the credentials file, the environment, a careless URL."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from actors.capture import Capture
from cluster.config import load_config, parse_config
from cluster.credentials import (
    CameraCredentials,
    CredentialSource,
    env_names,
    inject,
    load_credentials_file,
    write_credentials_file,
)
from cluster.errors import ConfigError, SourceError
from cluster.redact import redact

BASE = """
store: {id: s1, timezone: Europe/London}
cameras:
  - id: cam-1
    source: SOURCE
  - id: cam-2
    source: rtsp://10.0.0.6/live
"""

# The config as written before credentials existed: its version is pinned, it must never change.
PINNED = """
store: {id: s1, timezone: Europe/London}
cameras:
  - id: cam-1
    source: rtsp://10.0.0.5:554/s1
    lines: [{id: door, start: [0.1, 0.5], end: [0.9, 0.5], in_point: [0.5, 0.9]}]
"""


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_password_in_the_url_works_but_is_kept_out_of_the_model(tmp_path: Path) -> None:
    cfg = parse_config(BASE.replace("SOURCE", "rtsp://admin:Url-Pw-0001@10.0.0.5:554/s1"), source="s.yaml")
    cam = cfg.cameras[0]
    assert cam.source == "rtsp://10.0.0.5:554/s1"
    for text in (cfg.model_dump_json(), repr(cfg), str(cfg.model_dump()), repr(cfg.credential_source("cam-1"))):
        assert "Url-Pw-0001" not in text
    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith("s.yaml:5:13: cameras[0].source: the URL holds a user and password")
    assert "EDGEPAIR_CAMERA_CAM_1_PASSWORD" in cfg.warnings[0]
    assert "Url-Pw-0001" not in cfg.warnings[0]
    # it still reaches the capture, through the credential source (which survives pickling to a Ray actor)
    source = pickle.loads(pickle.dumps(cfg)).credential_source("cam-1")
    creds = source.resolve(environ={})
    assert creds is not None and (creds.user, creds.password) == ("admin", "Url-Pw-0001")
    assert inject(cam.source, creds) == "rtsp://admin:Url-Pw-0001@10.0.0.5:554/s1"
    assert "Url-Pw-0001" not in redact(f"open {inject(cam.source, creds)} failed: Url-Pw-0001")


def test_version_is_stable_and_has_no_secret(tmp_path: Path) -> None:
    plain = parse_config(PINNED, base_dir=Path("/srv/store"))
    assert plain.version() == "830755164e10"  # its version at HEAD, before credentials and security existed
    careless = parse_config(PINNED.replace("rtsp://", "rtsp://admin:Ver-Pw-0002@"), base_dir=Path("/srv/store"))
    assert careless.version() == plain.version()
    creds = _write(tmp_path / "cameras.yaml", "cam-1: {user: admin, password: 'Ver-Pw-0003'}\n")
    with_file = parse_config(PINNED + f"credentials_file: {creds}\n", base_dir=Path("/srv/store"))
    assert with_file.version() == plain.version()
    assert "Ver-Pw" not in with_file.model_dump_json()


def test_credentials_file_is_resolved_against_the_config_and_checked(tmp_path: Path) -> None:
    _write(tmp_path / "cameras.yaml", "cam-1: {user: admin, password: 'File-Pw-0004'}\n")
    cfg_path = tmp_path / "store.yaml"
    cfg_path.write_text(BASE.replace("SOURCE", "rtsp://10.0.0.5/x") + "credentials_file: cameras.yaml\n")
    cfg = load_config(cfg_path)
    assert cfg.credentials_file == tmp_path / "cameras.yaml"
    assert cfg.warnings == ()
    assert "File-Pw-0004" not in cfg.model_dump_json()
    creds = cfg.credential_source("cam-1").resolve(environ={})
    assert creds is not None and creds.password == "File-Pw-0004"
    assert "File-Pw-0004" not in repr(creds)
    assert cfg.credential_source("cam-2").resolve(environ={}) is None  # a camera without credentials


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("cam-1: {user: a, password: 'Pw-0005'}\n", 0o644, "is open to other users (mode 0644): run `chmod 600 "),
        ("cam-1: {user: a, password: 'Pw-0005'}\n", 0o640, "(mode 0640): run `chmod 600 "),
        ("cam-1: {user: a, password: 123456}\n", 0o600, "cam-1.password: write it as a quoted string"),
        ("cam-1: {user: a, pass: 'Pw-0005'}\n", 0o600, "cam-1: expected {user: ..., password: ...}"),
        ("cam-9: {user: a, password: 'Pw-0005'}\n", 0o600, "names cameras not in this config: cam-9"),
        ("cam-1: {user: a, password: 'Pw-0005'\n", 0o600, "credentials file: not valid YAML"),
        ("- a\n", 0o600, "expected a mapping of camera id"),
    ],
)
def test_bad_credentials_file_is_one_clear_line(tmp_path: Path, text: str, mode: int, expected: str) -> None:
    path = _write(tmp_path / "cameras.yaml", text, mode)
    with pytest.raises(ConfigError) as err:
        parse_config(BASE.replace("SOURCE", "rtsp://h/x") + f"credentials_file: {path}\n", source="s.yaml")
    msg = str(err.value)
    assert expected in msg
    assert "s.yaml:8:19: credentials_file: " in msg
    assert "Pw-0005" not in msg and "123456" not in msg
    if "chmod" in expected:
        assert f"chmod 600 {path}`" in msg


def test_missing_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"credentials file .*nope\.yaml not found"):
        parse_config(BASE.replace("SOURCE", "rtsp://h/x") + "credentials_file: nope.yaml\n", base_dir=tmp_path)


def test_environment_overrides_file_and_url(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", '{"cam-1": {"user": "file", "password": "Json-Pw-0006"}}')
    assert load_credentials_file(path)["cam-1"].password == "Json-Pw-0006"
    source = CredentialSource("cam-1", path, url_userinfo="url:Url-Pw-0007")
    user_var, password_var = env_names("cam-1")
    assert (user_var, password_var) == ("EDGEPAIR_CAMERA_CAM_1_USER", "EDGEPAIR_CAMERA_CAM_1_PASSWORD")
    env = {user_var: "env", password_var: "Env-Pw-0008"}
    assert source.resolve(environ=env) == CameraCredentials("env", "Env-Pw-0008", "the environment")
    resolved = source.resolve(environ={})
    assert resolved is not None and resolved.user == "file"
    resolved = CredentialSource("cam-1", None, url_userinfo="url:Url-Pw-0007").resolve(environ={})
    assert resolved is not None and resolved.user == "url"
    with pytest.raises(ConfigError, match="EDGEPAIR_CAMERA_CAM_1_PASSWORD is not set: set both"):
        source.resolve(environ={user_var: "env"})


@pytest.mark.parametrize(
    ("user", "password", "url"),
    [
        ("admin", "S3cret", "rtsp://admin:S3cret@h:554/x"),
        ("admin", "p@ss/w:rd?#%", "rtsp://admin:p%40ss%2Fw%3Ard%3F%23%25@h:554/x"),
        ("ad min", "", "rtsp://ad%20min@h:554/x"),
    ],
)
def test_inject_encodes_what_a_url_cannot_hold(user: str, password: str, url: str) -> None:
    creds = CameraCredentials(user, password)
    assert inject("rtsp://h:554/x", creds) == url
    assert inject("rtsp://old:creds@h:554/x", creds) == url
    assert inject("/videos/a.mp4", creds) == "/videos/a.mp4"
    assert inject("rtsp://h:554/x", None) == "rtsp://h:554/x"


def test_write_credentials_file_is_private_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "cameras.yaml"
    _write(path, "old", 0o644)
    write_credentials_file(path, {"cam-1": CameraCredentials("admin", "W-Pw-0009")})
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_credentials_file(path)["cam-1"].password == "W-Pw-0009"


def test_capture_keeps_the_password_out_of_its_source_and_errors() -> None:
    cap = Capture("cam-1", "rtsp://admin:Cap-Pw-0010@127.0.0.1:1/x", is_stream=True)
    assert cap.source == "rtsp://127.0.0.1:1/x"
    assert "Cap-Pw-0010" not in repr(cap.credentials)
    creds = cap.credentials.resolve(environ={})
    assert creds is not None and creds.password == "Cap-Pw-0010"


def test_capture_injects_the_file_password_only_into_the_stream_it_opens(tmp_path: Path) -> None:
    """A fake RTSP camera that asks for Basic auth: the capture answers with the credentials file's password."""
    import base64
    import socket
    import threading

    path = _write(tmp_path / "cameras.yaml", "cam-1: {user: admin, password: 'Inj-Pw/0011@'}\n")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        server.settimeout(20)
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            buf = b""
            while len(seen) < 2:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    text = head.decode(errors="replace")
                    seen.append(text)
                    cseq = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("CSeq")), "1")
                    challenge = 'WWW-Authenticate: Basic realm="cam"'
                    conn.sendall(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n{challenge}\r\n\r\n".encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cap = Capture(
        "cam-1",
        f"rtsp://127.0.0.1:{port}/x",
        is_stream=True,
        watchdog_s=4,
        credentials=CredentialSource("cam-1", path),
    )
    from actors import capture as capture_module

    with pytest.raises(SourceError):  # the fake camera never lets it in
        capture_module._open(cap.source, True, 2000, cap.credentials)
    thread.join(20)
    server.close()
    auth = [ln for text in seen for ln in text.splitlines() if ln.lower().startswith("authorization: basic ")]
    assert auth, seen
    assert base64.b64decode(auth[0].split()[-1]).decode() == "admin:Inj-Pw/0011@"
    assert all("Inj-Pw" not in text for text in seen)  # only in the Authorization header, never in the URL sent


def _refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="s.yaml")
    msg = str(info.value)
    assert "Traceback" not in msg
    return msg


def test_a_binary_source_is_refused_not_turned_into_text() -> None:
    # !!binary of rtsp://admin:BinSecret99@10.0.0.5/x: it skipped the split of the user info, then became text.
    msg = _refused(BASE.replace("SOURCE", "!!binary cnRzcDovL2FkbWluOkJpblNlY3JldDk5QDEwLjAuMC41L3g="))
    assert "cam-1: source must be text (a file path or a stream URL), not bytes" in msg and "BinSecret99" not in msg


def test_camera_ids_that_share_credential_variables_are_refused() -> None:
    text = BASE.replace("SOURCE", "rtsp://10.0.0.5/x").replace("id: cam-2", "id: CAM_1")
    msg = _refused(text)
    assert "camera ids cam-1 and CAM_1 differ only in case or '-'/'_'" in msg
    assert "EDGEPAIR_CAMERA_CAM_1_PASSWORD" in msg


@pytest.mark.parametrize("tz", ["localtime", "posixrules", "posix/Europe/London", "right/Europe/London", "Factory"])
def test_system_time_zone_aliases_are_refused(tz: str) -> None:
    msg = _refused(BASE.replace("SOURCE", "rtsp://10.0.0.5/x").replace("Europe/London", tz))
    assert f"time zone {tz!r} is a system alias, not an IANA zone" in msg


def test_a_url_without_slashes_is_refused_without_its_password() -> None:
    msg = _refused(BASE.replace("SOURCE", "rtsp:admin:SuperSecret9@10.0.0.5/x"))
    assert "rtsp: without '//' is not a URL: write rtsp://host/..." in msg and "SuperSecret9" not in msg


def test_a_password_in_the_query_is_masked_and_warned_about() -> None:
    cfg = parse_config(BASE.replace("SOURCE", "'http://10.0.0.5/v.cgi?user=admin&pwd=QuerySecret77'"), source="s.yaml")
    assert redact(f"cannot open stream {cfg.cameras[0].source}: x") == (
        "cannot open stream http://10.0.0.5/v.cgi?user=admin&pwd=***: x"
    )
    assert redact("QuerySecret77 alone") == "*** alone"  # registered as a secret too
    (warning,) = cfg.warnings
    assert "cameras[0].source: the URL's query holds a password or token: it is masked" in warning
    assert "QuerySecret77" not in warning


PAIR = """
store: {id: s1, timezone: Europe/London}
cameras: [{id: cam-1, source: rtsp://10.0.0.5/x}]
security: {tls: false}
cluster:
  etcd_endpoints: [ENDPOINTS]
  nodes:
    - {name: ws-a, host: 10.0.0.11, flight_port: FA, metrics_port: 9101}
    - {name: ws-b, host: HOST_B, flight_port: 8815, metrics_port: 9101}
"""


def _pair(endpoints: str = "10.0.0.11:2379, 10.0.0.12:2379, 10.0.0.13:2379", host_b: str = "10.0.0.12",
          fa: int = 8815) -> str:  # fmt: skip
    return PAIR.replace("ENDPOINTS", endpoints).replace("HOST_B", host_b).replace("FA", str(fa))


def test_a_pair_whose_nodes_or_members_collide_is_refused() -> None:
    assert parse_config(_pair(), source="s.yaml").cluster.nodes[1].host == "10.0.0.12"
    msg = _refused(_pair(endpoints="10.0.0.11:2379, http://10.0.0.11:2379, 10.0.0.13:2379"))
    assert "cluster.etcd_endpoints: 10.0.0.11:2379 listed twice: name each etcd member once" in msg
    msg = _refused(_pair(host_b="10.0.0.11"))
    assert "cluster.nodes: ws-b and ws-a both listen on 10.0.0.11:8815: give each node its own ports" in msg
    msg = _refused(_pair(host_b="10.0.0.11", fa=9000))
    assert "ws-b and ws-a both listen on 10.0.0.11:9101" in msg
    assert parse_config(_pair(host_b="10.0.0.11", fa=9000).replace("metrics_port: 9101}", "metrics_port: 9102}", 1),
                        source="s.yaml").cluster.nodes[1].host == "10.0.0.11"  # fmt: skip


def test_a_camera_slower_than_the_health_probe_is_refused() -> None:
    text = BASE.replace("SOURCE", "rtsp://10.0.0.5/x").replace(
        "source: rtsp://10.0.0.6/live", "source: rtsp://10.0.0.6/live\n    fps: 0.01"
    )
    msg = _refused(text)
    assert "camera cam-2: fps 0.01 is one frame every 100 s, but a camera with no frame for" in msg
    assert "cluster.health.camera_stale_s (5 s) counts against its node: use fps >= 0.4" in msg
    ok = text + "cluster: {health: {camera_stale_s: 120}}\n"
    assert _refused(ok.replace("fps: 0.01", "fps: 0.001"))  # still too slow for 120 s
    assert parse_config(ok.replace("fps: 0.01", "fps: 0.02"), source="s.yaml").cameras[1].fps == 0.02
