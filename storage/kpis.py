"""KPI definitions (versioned) and the SQL of the KPI views. Pure module: no file I/O (see :mod:`storage.analytics`).

A KPI definition is the set of thresholds that turn events into numbers: the bounce time, the visit merge window,
the minimum dwell of each zone and the opening hours. Its :meth:`KpiDefinition.version` (a short hash) is stored with
every KPI row (``kpi_version``). The history of definitions (``data_dir/kpi_definitions.jsonl``) gives each one an
effective-from UTC instant; a definition applies from the first *local* day that starts at or after that instant, so
a day is always computed with one definition and a change never rewrites a day already reported. Days before the
first recorded definition use the first one.

The KPI views are built on base relations that :mod:`storage.analytics` creates, the same for one store or for a
merged dataset of several stores: ``events`` (credited, exactly once, with ``ts_local``/``local_date``/
``local_hour`` in the store's zone), ``stores`` (store_id, timezone), ``lines``, ``zones``, ``kpi_definitions``,
``kpi_zone_thresholds`` and ``_kpi.cov_pieces`` (store_id, camera_id, p_start, p_end: processed time, UTC).

Local time: hourly rows are keyed by ``local_date``, ``local_hour`` and ``utc_offset_s``, so the repeated hour of an
autumn DST change gives two rows (a 25-hour day) and the skipped hour of spring none (a 23-hour day). Nothing depends
on the session time zone: a plain ``duckdb`` shell in any zone reads the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cluster.errors import ConfigError
from storage.kpisql import KPI_SCHEMA, KPI_VIEW_NAMES, create_kpi_views

__all__ = ["KPI_SCHEMA", "KPI_VIEW_NAMES", "create_kpi_views"]
_HHMM = re.compile(r"^(\d\d):(\d\d)$")


def _hhmm_to_s(text: str) -> int:
    m = _HHMM.match(text)
    if not m or int(m.group(2)) > 59 or int(m.group(1)) * 60 + int(m.group(2)) > 24 * 60:
        raise ConfigError(f"opening hour {text!r} is not HH:MM between 00:00 and 24:00")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60


@dataclass(frozen=True)
class LineSpec:
    """A configured line, as SQL needs it."""

    camera_id: str
    line_id: str
    kind: str


@dataclass(frozen=True)
class ZoneSpec:
    """A configured zone, as SQL needs it."""

    camera_id: str
    zone_id: str
    min_dwell_s: float


@dataclass(frozen=True)
class KpiDefinition:
    """The thresholds of the KPIs; ``min_dwell_s`` is ``(camera_id, zone_id, seconds)`` sorted."""

    bounce_s: float
    visit_merge_s: float
    opening_hours: tuple[str, str]
    min_dwell_s: tuple[tuple[str, str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.open_s >= self.close_s:
            raise ConfigError(
                f"opening hours {self.opening_hours[0]}-{self.opening_hours[1]}: opening must be before closing"
                " (hours across midnight are not supported; use 00:00-24:00 for a store that never closes)"
            )

    @property
    def open_s(self) -> int:
        """Opening time in seconds after local midnight."""
        return _hhmm_to_s(self.opening_hours[0])

    @property
    def close_s(self) -> int:
        """Closing time in seconds after local midnight (86400 for 24:00)."""
        return _hhmm_to_s(self.opening_hours[1])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (also the text that is hashed)."""
        return {
            "bounce_s": float(self.bounce_s),
            "visit_merge_s": float(self.visit_merge_s),
            "opening_hours": list(self.opening_hours),
            "min_dwell_s": [[c, z, float(s)] for c, z, s in sorted(self.min_dwell_s)],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KpiDefinition:
        """Inverse of :meth:`to_json`."""
        return cls(
            bounce_s=float(d["bounce_s"]),
            visit_merge_s=float(d["visit_merge_s"]),
            opening_hours=(str(d["opening_hours"][0]), str(d["opening_hours"][1])),
            min_dwell_s=tuple((str(c), str(z), float(s)) for c, z, s in d.get("min_dwell_s", [])),
        )

    def version(self) -> str:
        """A short hash of the definition: the same thresholds always give the same version."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class StoreSetup:
    """The pieces of a store config that analytics needs (the CLI builds it with :meth:`from_config`)."""

    store_id: str
    timezone: str
    lines: tuple[LineSpec, ...] = ()
    zones: tuple[ZoneSpec, ...] = ()
    bounce_s: float = 10.0
    visit_merge_s: float = 5.0
    opening_hours: tuple[str, str] = ("00:00", "24:00")

    @classmethod
    def from_config(cls, cfg: Any) -> StoreSetup:
        """From a validated :class:`cluster.config.Config`."""
        return cls(
            store_id=cfg.store.id,
            timezone=cfg.store.timezone,
            lines=tuple(LineSpec(c.id, ln.id, ln.kind) for c in cfg.cameras for ln in c.lines),
            zones=tuple(ZoneSpec(c.id, z.id, z.min_dwell_s) for c in cfg.cameras for z in c.zones),
            bounce_s=cfg.kpi.bounce_s,
            visit_merge_s=cfg.kpi.visit_merge_s,
            opening_hours=tuple(cfg.kpi.opening_hours),
        )

    def definition(self) -> KpiDefinition:
        """The KPI definition of this config."""
        return KpiDefinition(
            bounce_s=self.bounce_s,
            visit_merge_s=self.visit_merge_s,
            opening_hours=self.opening_hours,
            min_dwell_s=tuple(sorted((z.camera_id, z.zone_id, float(z.min_dwell_s)) for z in self.zones)),
        )

    def to_json(self) -> dict[str, Any]:
        """What ``store.json`` holds (the definition lives in the history file, not here)."""
        return {
            "store_id": self.store_id,
            "timezone": self.timezone,
            "lines": [[ln.camera_id, ln.line_id, ln.kind] for ln in self.lines],
            "zones": [[z.camera_id, z.zone_id, float(z.min_dwell_s)] for z in self.zones],
        }


@dataclass(frozen=True)
class DefinitionRecord:
    """One line of the definitions history: a definition and the UTC instant from which it is in force."""

    version: str
    effective_from: datetime
    definition: KpiDefinition

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "effective_from": self.effective_from.astimezone(UTC).isoformat(),
            "definition": self.definition.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DefinitionRecord:
        definition = KpiDefinition.from_json(d["definition"])
        eff = datetime.fromisoformat(d["effective_from"])
        if eff.tzinfo is None:
            raise ValueError(f"effective_from {d['effective_from']!r} has no UTC offset")
        return cls(str(d.get("version") or definition.version()), eff.astimezone(UTC), definition)


def valid_from_date(effective_from: datetime, timezone: str) -> date:
    """The first local date (in ``timezone``) that starts at or after ``effective_from``."""
    local = effective_from.astimezone(ZoneInfo(timezone))
    day = local.date()
    if local.replace(tzinfo=None) == datetime(day.year, day.month, day.day):
        return day
    return day + timedelta(days=1)


def definition_periods(
    history: list[DefinitionRecord], timezone: str
) -> list[tuple[DefinitionRecord, date, date | None]]:
    """Each record with the local dates ``[valid_from, valid_to)`` it applies to; the first from 1970-01-01.

    A record superseded by a later one that takes effect the same local day never applies and is left out.
    """
    starts = [valid_from_date(r.effective_from, timezone) for r in history]
    out: list[tuple[DefinitionRecord, date, date | None]] = []
    for i, rec in enumerate(history):
        start = date(1970, 1, 1) if not out else starts[i]
        end = starts[i + 1] if i + 1 < len(history) else None
        if end is not None and end <= start:
            continue
        out.append((rec, start, end))
    return out
