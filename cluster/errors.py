"""One error tree for every expected failure, so the CLI prints one clear line for each.

Every error says what went wrong, names the thing (file, camera, URL, key) and says what to do.
Library exceptions are translated at the boundary: ``raise ModelError(...) from exc``.
"""

from __future__ import annotations


class EdgepairError(Exception):
    """Base of every error edgepair expects and reports without a traceback."""

    exit_code = 1


class ConfigError(EdgepairError):
    """The store config is missing, unreadable or invalid."""

    exit_code = 2


class ModelError(EdgepairError):
    """The detector model is missing, corrupt, or of a family we cannot decode."""


class SourceError(EdgepairError):
    """A camera source (file, RTSP or HTTP stream) cannot be opened or read."""


class StorageError(EdgepairError):
    """Segments cannot be written or read (full disk, permissions, corrupt file)."""


class DCSError(EdgepairError):
    """The distributed configuration store (etcd) failed or cannot be reached."""


class QueryError(EdgepairError):
    """An analyst query failed (bad SQL, missing view)."""
