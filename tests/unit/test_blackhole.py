"""The black-hole proxy on loopback against a small echo server: forwards, holds everything while cut, resumes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.harness.blackhole import BlackHole, Partition, partitions

QUIET = 0.3  # how long a cut connection is watched for bytes that must not come


class Echo:
    """A TCP echo server on 127.0.0.1 (one thread per connection); ``close`` closes every socket."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.socks.append(sock)
            t = threading.Thread(target=self._echo, args=(sock,), daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def _echo(sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread; close alone would not
        except OSError:
            pass
        self.listener.close()
        for sock in self.socks:
            sock.close()
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def proxy(echo: Echo) -> Iterator[BlackHole]:
    with BlackHole(echo.endpoint, name="test") as p:
        yield p


def dial(endpoint: str) -> socket.socket:
    host, port = endpoint.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def assert_silent(sock: socket.socket) -> None:
    sock.settimeout(QUIET)
    try:
        with pytest.raises(TimeoutError):
            sock.recv(1)
    finally:
        sock.settimeout(5)


def test_forwards_both_ways(proxy: BlackHole) -> None:
    with dial(proxy.endpoint) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB, more than one socket buffer
        sock.sendall(big)
        assert recv_exactly(sock, len(big)) == big
    assert proxy.accepted == 1


def test_cut_holds_bytes_without_closing_and_heal_delivers_them(proxy: BlackHole) -> None:
    with dial(proxy.endpoint) as sock:
        sock.sendall(b"before")
        assert recv_exactly(sock, 6) == b"before"
        proxy.cut()
        sock.sendall(b"during")
        assert_silent(sock)  # nothing comes back, and the socket is not closed (that would read b"")
        proxy.heal()
        assert recv_exactly(sock, 6) == b"during"
        sock.sendall(b"after")
        assert recv_exactly(sock, 5) == b"after"
    assert proxy.accepted == 1


def test_new_connection_while_cut_is_held_until_heal(proxy: BlackHole) -> None:
    proxy.cut()
    with dial(proxy.endpoint) as sock:  # the kernel completes the handshake; the proxy does not accept
        sock.sendall(b"held")
        assert_silent(sock)
        assert proxy.accepted == 0
        proxy.heal()
        assert recv_exactly(sock, 4) == b"held"
    assert proxy.accepted == 1


def test_upstream_down_closes_the_client(echo: Echo) -> None:
    port = echo.port
    echo.close()  # nothing listens on the target any more
    with BlackHole(f"127.0.0.1:{port}") as p, dial(p.endpoint) as sock:
        assert recv_exactly(sock, 1) == b""
        assert p.accepted == 0


def test_partition_cuts_every_proxy_of_a_node(echo: Echo) -> None:
    other = Echo()
    made = partitions(["ws-a", "ws-b"], [echo.endpoint, other.endpoint])
    try:
        a: Partition = made["ws-a"]
        assert a.endpoint_for(other.endpoint) == a.endpoints[1]
        a.cut()
        socks = [dial(ep) for ep in a.endpoints + made["ws-b"].endpoints]
        for sock in socks:
            sock.sendall(b"ping")
        for sock in socks[2:]:  # ws-b is not cut
            assert recv_exactly(sock, 4) == b"ping"
        for sock in socks[:2]:
            assert_silent(sock)
        a.heal()
        for sock in socks[:2]:
            assert recv_exactly(sock, 4) == b"ping"
        for sock in socks:
            sock.close()
    finally:
        for p in made.values():
            p.close()
        other.close()
