from __future__ import annotations

import io
import logging

import pytest

from cluster.redact import (
    MASK,
    RedactFilter,
    install_log_redaction,
    redact,
    register_secret,
    split_userinfo,
    strip_userinfo,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:S3cret@10.0.0.5:554/stream1", "rtsp://10.0.0.5:554/stream1"),
        ("rtsps://admin:S3cret@cam.local/x", "rtsps://cam.local/x"),
        ("http://u:p@10.0.0.5/snap.jpg", "http://10.0.0.5/snap.jpg"),
        ("https://u:p@cam.example:8443/live?ch=1", "https://cam.example:8443/live?ch=1"),
        ("https://u:p@h?q=1", "https://h?q=1"),
        ("ftp://u:p@h/f", "ftp://h/f"),  # any scheme
        ("postgresql://app:pw@db:5432/x", "postgresql://db:5432/x"),
        ("RTSP://ADMIN:PW@HOST/X", "RTSP://HOST/X"),
        # IPv6 hosts, with and without a zone id
        ("rtsp://admin:pw@[::1]:554/x", "rtsp://[::1]:554/x"),
        ("http://user:pa%40ss@[fe80::1%25eth0]:8080/p?x=1", "http://[fe80::1%25eth0]:8080/p?x=1"),
        # %-encoded passwords, '@' and ':' inside the password (unencoded, as a careless installer writes them)
        ("rtsp://admin:p%40ss%3Aw%2Fd@host/x", "rtsp://host/x"),
        ("rtsp://admin:p@ss@word@host/x", "rtsp://host/x"),
        ("rtsp://u:a:b:c@h", "rtsp://h"),
        # a user without a password, an empty password
        ("rtsp://admin@host/x", "rtsp://host/x"),
        ("rtsp://admin:@host/x", "rtsp://host/x"),
        # no user info: unchanged, even with an '@' in the path or the query
        ("rtsp://10.0.0.5:554/stream1", "rtsp://10.0.0.5:554/stream1"),
        ("rtsp://[::1]:554/x", "rtsp://[::1]:554/x"),
        ("http://h/p?user=a@b.com", "http://h/p?user=a@b.com"),
        ("http://h/a@b", "http://h/a@b"),
        ("/var/lib/edgepair/video@night.mp4", "/var/lib/edgepair/video@night.mp4"),
        # URLs inside text: error messages, reprs, several in a line, a scheme glued to a word
        (
            "cannot open stream rtsp://admin:pw@1.2.3.4/x: check the URL",
            "cannot open stream rtsp://1.2.3.4/x: check the URL",
        ),
        ("x=['rtsp://a:bbbb@h/x', 'y@z']", "x=['rtsp://h/x', 'y@z']"),
        ("a rtsp://u:p@h1/x b http://v:q@h2/y", "a rtsp://h1/x b http://h2/y"),
        ("source=foo_rtsp://a:b@h/x", "source=foo_rtsp://h/x"),
        ("user foo@example.com wrote", "user foo@example.com wrote"),
    ],
)
def test_redact_strips_user_info(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert strip_userinfo(text) == expected
    assert redact(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("url", "bare", "userinfo"),
    [
        ("rtsp://admin:pw@h/x", "rtsp://h/x", "admin:pw"),
        ("rtsp://admin:p@ss@h/x", "rtsp://h/x", "admin:p@ss"),
        ("rtsp://h/x", "rtsp://h/x", None),
        ("/videos/a.mp4", "/videos/a.mp4", None),
    ],
)
def test_split_userinfo(url: str, bare: str, userinfo: str | None) -> None:
    assert split_userinfo(url) == (bare, userinfo)


def test_registered_secret_is_masked_without_its_url() -> None:
    register_secret("Zq9-unit-secret/x")
    assert redact("ffmpeg: 401 for user admin with Zq9-unit-secret/x") == f"ffmpeg: 401 for user admin with {MASK}"
    assert MASK in redact("GET /?pw=Zq9-unit-secret%2Fx")  # its %-encoded form too
    assert redact(RuntimeError("boom Zq9-unit-secret/x")) == f"boom {MASK}"


def test_short_secrets_are_not_masked_by_value() -> None:
    register_secret("ab1")  # masking every "ab1" would garble every line; its URLs are still stripped
    assert redact("tab1 rtsp://u:ab1@h/x") == "tab1 rtsp://h/x"


def _capture_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_install_log_redaction_covers_message_args_and_traceback() -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    register_secret("Log-Secret-42")
    logger, stream = _capture_logger("test_redact.install")
    logger.warning("camera %s: cannot open %s", "cam-1", "rtsp://admin:Log-Secret-42@10.0.0.9/x")
    logger.info("dict args %(url)s", {"url": "rtsp://admin:Log-Secret-42@h/y"})
    logger.info("echo without URL: Log-Secret-42")
    try:
        raise ValueError("open rtsp://admin:Log-Secret-42@h/z failed")
    except ValueError:
        logger.exception("pipeline failed")
    logger.info("bad args %s %s", "only one")  # a mismatch is logging's own error, still without the secret
    out = stream.getvalue()
    assert "Log-Secret-42" not in out
    assert "admin:" not in out
    assert "camera cam-1: cannot open rtsp://10.0.0.9/x" in out
    assert "ValueError: open rtsp://h/z failed" in out


def test_filter_on_a_handler_alone() -> None:
    register_secret("Filter-Secret-7")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter())
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "open %s: Filter-Secret-7", ("rtsp://a:b@h",), None)
    handler.handle(record)
    assert stream.getvalue().strip() == f"open rtsp://h: {MASK}"
