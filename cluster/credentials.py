"""Camera credentials, kept apart from the store config that is logged, diffed, dumped and hashed.

A camera's user and password come from, in this order (the first that names the camera wins):

1. the environment: ``EDGEPAIR_CAMERA_<ID>_USER`` and ``EDGEPAIR_CAMERA_<ID>_PASSWORD``, the camera id upper-cased
   with ``-`` as ``_`` (``cam-1`` -> ``EDGEPAIR_CAMERA_CAM_1_PASSWORD``); both or neither;
2. the credentials file named by ``credentials_file:`` in the store config: YAML (or JSON) mapping each camera id to
   ``{user: ..., password: ...}``, owned by the node's user, mode 0600 or stricter (managed by Ansible, ``no_log``)::

       cam-1: {user: admin, password: "S3cret"}

3. the user info written in the camera's URL (``rtsp://admin:S3cret@10.0.0.5/x``): still works, but the config
   loader strips it from the URL at once and ``validate-config`` warns that it belongs in the credentials file.

The config keeps only where to look (:class:`CredentialSource`, no secret of the file or the environment); the
camera's capture resolves it and injects the user info into the URL only when it opens the stream. Every password
loaded is registered with :mod:`cluster.redact`, so it is masked in whatever this process logs or reports.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import yaml

from cluster.errors import ConfigError
from cluster.redact import register_secret, split_userinfo

ENV_PREFIX = "EDGEPAIR_CAMERA_"
MAX_FILE_BYTES = 1024 * 1024
MAX_FIELD_LEN = 256
# Characters left as they are in the user info: RFC 3986's unreserved and sub-delims; every other one is %-encoded
# (FFmpeg and GStreamer decode the user info before they authenticate).
_USERINFO_SAFE = "!$&'()*+,;=-._~"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)


@dataclass(frozen=True)
class CameraCredentials:
    """One camera's user and password (decoded) and where they came from; the password never shows in a repr."""

    user: str
    password: str = field(repr=False)
    origin: str = ""
    raw_userinfo: str | None = field(default=None, repr=False, compare=False)  # as written in a URL

    def userinfo(self) -> str:
        """``user:password`` for a URL: as written when it came from a URL, else %-encoded where needed."""
        if self.raw_userinfo is not None:
            return self.raw_userinfo
        user = quote(self.user, safe=_USERINFO_SAFE)
        return f"{user}:{quote(self.password, safe=_USERINFO_SAFE)}" if self.password else user

    @classmethod
    def from_userinfo(cls, userinfo: str, origin: str = "the camera's URL") -> CameraCredentials:
        user, _, password = userinfo.partition(":")
        creds = cls(unquote(user), unquote(password), origin, raw_userinfo=userinfo)
        register_secret(password)
        return creds


def env_names(camera_id: str) -> tuple[str, str]:
    """The environment variables of a camera's user and password."""
    key = ENV_PREFIX + camera_id.upper().replace("-", "_")
    return f"{key}_USER", f"{key}_PASSWORD"


def credentials_from_env(camera_id: str, environ: Mapping[str, str] | None = None) -> CameraCredentials | None:
    """The camera's credentials from the environment, None when neither variable is set."""
    env = os.environ if environ is None else environ
    user_var, password_var = env_names(camera_id)
    user, password = env.get(user_var), env.get(password_var)
    if user is None and password is None:
        return None
    if user is None or password is None:
        missing = user_var if user is None else password_var
        raise ConfigError(f"camera {camera_id}: {missing} is not set: set both {user_var} and {password_var}, or none")
    register_secret(password)
    return CameraCredentials(user, password, "the environment")


def check_private(path: Path) -> None:
    """Refuse a credentials file that others can read or write (it must be mode 0600 or stricter)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"credentials file {path} not found: create it (mode 0600) or fix credentials_file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"credentials file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"credentials file {path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}):"
            f" run `chmod 600 {path}`"
        )


def load_credentials_file(path: Path) -> dict[str, CameraCredentials]:
    """Every camera's credentials in ``path`` (checked: private, a mapping of id -> {user, password} strings).

    Errors name the file and the camera, never a value: a YAML error gives its line and column only.
    """
    check_private(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"credentials file {path} is over {MAX_FILE_BYTES // 1024} KiB: is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"credentials file {path} is not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: credentials file: not valid JSON") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: credentials file: not valid YAML") from None
    except (ValueError, RecursionError):
        raise ConfigError(f"{path}: credentials file: not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"credentials file {path}: expected a mapping of camera id -> {{user, password}}")
    out: dict[str, CameraCredentials] = {}
    for cam_id, entry in data.items():
        if not isinstance(cam_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", cam_id):
            raise ConfigError(f"credentials file {path}: {str(cam_id)[:64]!r} is not a camera id")
        if not isinstance(entry, dict) or set(entry) - {"user", "password"} or "user" not in entry:
            raise ConfigError(
                f"credentials file {path}: {cam_id}: expected {{user: ..., password: ...}} and no other key"
            )
        user, password = entry["user"], entry.get("password", "")
        for name, value in (("user", user), ("password", password)):
            if not isinstance(value, str):
                raise ConfigError(
                    f"credentials file {path}: {cam_id}.{name}: write it as a quoted string"
                    " (YAML reads unquoted digits, yes/no or dates as other types)"
                )
            if len(value) > MAX_FIELD_LEN or any(c in value for c in "\x00\r\n"):
                raise ConfigError(
                    f"credentials file {path}: {cam_id}.{name}: at most {MAX_FIELD_LEN} characters, no line breaks"
                )
        register_secret(password)
        out[cam_id] = CameraCredentials(user, password, f"credentials file {path}")
    return out


def write_credentials_file(path: Path, credentials: Mapping[str, CameraCredentials]) -> None:
    """Write ``credentials`` to ``path``, created mode 0600 from the start (never readable by others, even briefly)."""
    data = {cid: {"user": c.user, "password": c.password} for cid, c in sorted(credentials.items())}
    text = yaml.safe_dump(data, default_flow_style=False).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of the same name kept its mode through O_CREAT
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class CredentialSource:
    """Where one camera's credentials are found: no secret of the file or the environment, read when resolved.

    ``url_userinfo`` is the user info a careless installer wrote into the camera's URL (None when there was none).
    Picklable: it travels with the camera's worker to its Ray actor.
    """

    camera_id: str
    file: Path | None = None
    url_userinfo: str | None = field(default=None, repr=False)

    def resolve(self, environ: Mapping[str, str] | None = None) -> CameraCredentials | None:
        """The camera's credentials (environment, then file, then URL), or None: it needs none. Raises ConfigError."""
        creds = credentials_from_env(self.camera_id, environ)
        if creds is not None:
            return creds
        if self.file is not None:
            found = load_credentials_file(self.file).get(self.camera_id)
            if found is not None:
                return found
        if self.url_userinfo is not None:
            return CameraCredentials.from_userinfo(self.url_userinfo)
        return None


def inject(url: str, credentials: CameraCredentials | None) -> str:
    """``url`` with ``credentials`` as its user info (replacing any); unchanged for a file path or no credentials."""
    if credentials is None or not _SCHEME.match(url):
        return url
    bare, _ = split_userinfo(url)
    scheme, _, rest = bare.partition("://")
    return f"{scheme}://{credentials.userinfo()}@{rest}"
