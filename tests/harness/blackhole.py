"""A black-hole TCP proxy on loopback: put it between a node and an etcd client port to cut the node off.

``BlackHole(target)`` listens on ``127.0.0.1:<free port>`` and forwards every connection to ``target``. ``cut()``
makes it behave like a dropped network: no byte moves in either direction (what is in flight stays buffered), no
socket is closed, and new connections are held (not accepted: the kernel's backlog keeps them, so a client sees a
connection that never answers, and once the backlog is full its connects time out). ``heal()`` resumes: held
connections are accepted and connected upstream, buffered bytes are delivered, as when a network comes back.

``Partition`` groups the proxies of one node (one per etcd member) so that the node can be cut from every member
at once. Limit: a member that is down shows through the proxy as a connection that is accepted and then closed,
not as a refused connection, so a node behind a proxy reports a dead member as "not answering" rather than "down".

One thread per proxy polls every socket; ``close()`` stops it and closes every socket (also the held ones).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
CHUNK = 65536
BUFFER_LIMIT = 1 << 20  # bytes buffered per direction before the proxy stops reading that side


@dataclass(eq=False)  # compared by identity
class _Conn:
    client: socket.socket
    upstream: socket.socket
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.close()
            except OSError:
                pass


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target must be host:port, got {target!r}")
    return host, int(port)


class BlackHole:
    """One proxy in front of ``target`` (``host:port``); see the module docstring."""

    def __init__(self, target: str, name: str = "", backlog: int = 64) -> None:
        self.target = _split_target(target)
        self.name = name or target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(backlog)
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.conns: list[_Conn] = []
        self.cut_now = False
        self.accepted = 0
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"blackhole-{self.name}", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    # -- control ---------------------------------------------------------------------------------------------------

    def cut(self) -> None:
        """Stop forwarding in both directions and stop accepting; nothing is closed."""
        with self._lock:
            self.cut_now = True
        self._wake()
        log.info("blackhole %s: cut (%d connections held)", self.name, len(self.conns))

    def heal(self) -> None:
        """Forward again: accept what waited in the backlog, deliver what was buffered."""
        with self._lock:
            self.cut_now = False
        self._wake()
        log.info("blackhole %s: healed", self.name)

    def close(self) -> None:
        """Stop the thread and close every socket. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.conns.clear()
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # -- the forwarding thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            with self._lock:
                cut = self.cut_now
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            fds: dict[int, tuple[_Conn | None, str]] = {}
            if not cut:
                poller.register(self.listener, select.POLLIN)
                fds[self.listener.fileno()] = (None, "listen")
                for conn in self.conns:
                    for sock, inbox, outbox in (
                        (conn.client, conn.to_upstream, conn.to_client),
                        (conn.upstream, conn.to_client, conn.to_upstream),
                    ):
                        mask = 0
                        if len(inbox) < BUFFER_LIMIT:
                            mask |= select.POLLIN
                        if outbox:
                            mask |= select.POLLOUT
                        poller.register(sock, mask)
                        fds[sock.fileno()] = (conn, "client" if sock is conn.client else "upstream")
            for fd, events in poller.poll():
                if fd == self._wake_r.fileno():
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                if self._closed:
                    return
                with self._lock:
                    if self.cut_now:  # cut while polling: move nothing more
                        break
                owner, side = fds[fd]
                if owner is None:
                    self._accept()
                elif owner in self.conns:
                    self._pump(owner, side, events)

    def _accept(self) -> None:
        try:
            client, _addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            upstream = socket.create_connection(self.target, timeout=1.0)
        except OSError as exc:
            log.debug("blackhole %s: upstream %s:%d unreachable: %s", self.name, *self.target, exc)
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.append(_Conn(client, upstream))
        self.accepted += 1

    def _pump(self, conn: _Conn, side: str, events: int) -> None:
        sock, inbox, outbox, peer = (
            (conn.client, conn.to_upstream, conn.to_client, conn.upstream)
            if side == "client"
            else (conn.upstream, conn.to_client, conn.to_upstream, conn.client)
        )
        try:
            if events & select.POLLOUT and outbox:
                sent = sock.send(outbox)
                del outbox[:sent]
            if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                data = sock.recv(CHUNK)
                if not data:
                    self._finish(conn, peer, inbox)
                    return
                inbox.extend(data)
                try:  # forward at once where the peer can take it; the rest goes on POLLOUT
                    sent = peer.send(inbox)
                    del inbox[:sent]
                except BlockingIOError:
                    pass
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)

    def _finish(self, conn: _Conn, peer: socket.socket, pending: bytearray) -> None:
        """One side closed: hand the peer what is left for it, then close both."""
        try:
            peer.setblocking(True)
            peer.settimeout(1.0)
            if pending:
                peer.sendall(pending)
        except OSError:
            pass
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        conn.close()
        if conn in self.conns:
            self.conns.remove(conn)


class Partition:
    """The proxies of one node, one per etcd member endpoint; ``cut``/``heal`` act on all of them."""

    def __init__(self, targets: Iterable[str], name: str = "") -> None:
        self.proxies: list[BlackHole] = []
        try:
            for target in targets:
                self.proxies.append(BlackHole(target, name=f"{name}->{target}"))
        except BaseException:
            self.close()
            raise

    @property
    def endpoints(self) -> list[str]:
        return [p.endpoint for p in self.proxies]

    def endpoint_for(self, target: str) -> str:
        host, port = _split_target(target)
        for p in self.proxies:
            if p.target == (host, port):
                return p.endpoint
        raise KeyError(target)

    def cut(self) -> None:
        for p in self.proxies:
            p.cut()

    def heal(self) -> None:
        for p in self.proxies:
            p.heal()

    def close(self) -> None:
        for p in self.proxies:
            p.close()


def partitions(nodes: Sequence[str], targets: Sequence[str]) -> dict[str, Partition]:
    """One ``Partition`` per node in front of the same ``targets``; on failure the ones made are closed."""
    made: dict[str, Partition] = {}
    try:
        for node in nodes:
            made[node] = Partition(targets, name=node)
    except BaseException:
        for p in made.values():
            p.close()
        raise
    return made
