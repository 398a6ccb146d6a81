"""One redaction helper for everything edgepair prints, logs or reports: no camera password gets out.

``redact(text)`` does two things:

1. strips the user info (``user:password@``) from every URL in the text, whatever the scheme (``rtsp://``,
   ``rtsps://``, ``http(s)://``, any ``scheme://user:pass@host``): ``rtsp://admin:pw@10.0.0.5/x`` becomes
   ``rtsp://10.0.0.5/x``. The user info runs to the last ``@`` before the host's end (``/``, ``?``, ``#`` or
   whitespace), so a password holding an ``@`` is cut whole;
2. masks, as ``***``, every secret value registered in this process (``register_secret``: the credentials module
   registers each camera password it loads, raw and %-encoded), so a password that a library echoes without its URL
   (OpenCV, GStreamer, FFmpeg error messages) is masked too. Values shorter than ``MIN_SECRET_LEN`` are not masked
   by value (masking every "1" would garble every line); their URLs are still stripped.

``install_log_redaction()`` applies it to every log record of this process: message, arguments, traceback and
stack. Call it wherever logging is set up (CLI ``main``, the node agent) and in every process that may log a secret:
``actors.capture.Capture`` installs it itself, so Ray's camera worker processes are covered.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

MIN_SECRET_LEN = 4
MASK = "***"

# scheme://  then the user info: anything but the authority's end up to the last "@" before it (greedy, backtracks)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*@)")

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None


# A secret in a URL's query (``...cgi?user=admin&pwd=...``, as many HTTP cameras take it): the value is masked.
_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:pass|passwd|password|pwd|secret|token|key|apikey|api_key|auth)=)"
    r"[^&#\s]*?(?=$|[&#\s]|:(?:\s|$))"  # up to the next parameter, space, or a ': ' that ends the URL in a message
)


def strip_userinfo(url: str) -> str:
    """``url`` (or any text) with the user info of each URL removed, and the values of query parameters that hold
    a secret (``pwd=``, ``password=``, ``token=``, ...) masked."""
    return _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(lambda m: m.group("scheme"), url))


def secret_params(url: str) -> list[str]:
    """The values of the query parameters of ``url`` that hold a secret (to register them, never to show)."""
    return [m.group(0)[len(m.group(1)) :] for m in _SECRET_PARAM.finditer(url) if m.group(0)[len(m.group(1)) :]]


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``(url without user info, the user info as written)`` for a single URL; user info None when there is none."""
    m = _USERINFO.match(url.strip())
    if m is None:
        return url, None
    return url.strip()[: m.start("userinfo")] + url.strip()[m.end("userinfo") :], m.group("userinfo")[:-1]


def register_secret(value: str | None) -> None:
    """Mask ``value`` (and its %-encoded and %-decoded forms) in everything ``redact`` sees from now on."""
    if not value:
        return
    forms = {value, quote(value, safe=""), quote(value, safe="!$&'()*+,;=-._~"), unquote(value)}
    global _secret_re
    with _lock:
        new = {f for f in forms if len(f) >= MIN_SECRET_LEN} - _secrets
        if not new:
            return
        _secrets.update(new)
        alternatives = sorted(_secrets, key=len, reverse=True)  # longest first: a secret containing another
        _secret_re = re.compile("|".join(re.escape(s) for s in alternatives))


def registered_secrets() -> int:
    """How many secret forms are registered (for tests and a start-up log line; never the values)."""
    return len(_secrets)


def redact(text: object) -> str:
    """``text`` (any object: it is ``str()``-ed) without URL user info and without any registered secret."""
    out = strip_userinfo(str(text))
    pattern = _secret_re
    if pattern is not None:
        out = pattern.sub(MASK, out)
    return out


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, (int, float, bool)) or arg is None:
        return arg
    return redact(arg)


class RedactFilter(logging.Filter):
    """Redacts a record's message, arguments, traceback and stack in place; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if getattr(record, "_edgepair_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # args that do not fit the message: redact the pieces, let logging report the mismatch
        record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
    else:
        record.msg = redact(message)
        record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._edgepair_redacted = True  # type: ignore[attr-defined]
    return record


_installed = False
_FILTER = RedactFilter()


def install_log_redaction() -> None:
    """Redact every log record of this process from now on. Idempotent; cheap to call at every start.

    Two hooks, so no handler escapes: a record factory (every record is redacted when it is made, whichever logger
    and handler it goes to, including handlers added later, as Ray's in its worker processes) and the filter on every
    handler the root logger has now (records made by a factory installed later, without chaining ours).
    """
    global _installed
    with _lock:
        if not _installed:
            previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                return _redact_record(previous(*args, **kwargs))

            logging.setLogRecordFactory(factory)
            _installed = True
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
