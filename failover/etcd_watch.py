"""The watch on the store's keys that wakes the HA loop early (:meth:`failover.etcd_dcs.EtcdDCS.watch_changes`).

- One watch at a time, on the prefix, at the endpoint the DCS currently uses; each event is passed through a
  :class:`failover.dcs.ChangeFilter` and wakes the loop (``on_change``) only for a change the loop acts on.
- When the stream ends (the member died, the client closed) the loop is woken once and the watch is marked dead; the
  next call re-arms it (a later tick). While it is dead or silent the loop just polls.
- The watch is an optional speed-up: no failure to arm or cancel it reaches the loop (logged at debug).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pyetcd.events import DeleteEvent

from failover.dcs import ChangeFilter
from failover.etcd_tls import describe

log = logging.getLogger("failover.etcd_dcs")  # the lines the DCS wrote before the split keep its name


class KeyWatch:
    """:meth:`arm` (idempotent while alive), :meth:`cancel`."""

    def __init__(self, prefix: str, store_id: str) -> None:
        self.prefix = prefix
        self.store_id = store_id
        self.current: tuple[Any, int] | None = None  # (the client it runs on, its watch id)
        self.dead = False

    def arm(self, client: Any, on_change: Callable[[], None], me: str) -> bool:
        """Watch the keys through ``client`` unless a live watch runs; False when it cannot be armed."""
        if self.current is not None and not self.dead:
            return True
        self.cancel()
        self.dead = False
        changes = ChangeFilter(me)
        prefix = self.prefix

        def callback(response: object) -> None:
            if response is None or isinstance(response, BaseException):
                self.dead = True  # the stream ended: re-armed at a later tick
                on_change()
                return
            woke = False
            for event in getattr(response, "events", ()):
                name = bytes(event.key).decode(errors="replace")[len(prefix) :]
                value = None if isinstance(event, DeleteEvent) else bytes(event.value)
                woke = changes.wakes(name, value) or woke
            if woke:
                on_change()

        try:
            watch_id = client.add_watch_prefix_callback(prefix, callback)
        except Exception as exc:  # an optional speed-up: no failure of it may reach the loop
            log.debug("watching the keys of store %s failed: %s", self.store_id, describe(exc))
            return False
        self.current = (client, int(watch_id))
        return True

    def cancel(self) -> None:
        watch, self.current = self.current, None
        if watch is not None:
            try:
                watch[0].cancel_watch(watch[1])
            except Exception as exc:  # cancelling must never raise
                log.debug("cancelling the leader watch: %s", exc)
