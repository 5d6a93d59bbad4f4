"""Loopback-only network stand-ins: a closed port, a listener that never answers, and a TCP proxy
that can be taken down and brought back (a source that goes away and returns)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

LOOPBACK = "127.0.0.1"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(64)
    server.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()
        for conn in held:
            conn.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a loopback target while up; while down the port is closed
    (connection refused) and open connections are cut (connection lost)."""

    def __init__(self, target_port: int) -> None:
        self.target = (LOOPBACK, target_port)
        self.port = closed_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, self.port))
        server.listen(64)
        server.settimeout(0.05)
        self._server = server
        self._stop = threading.Event()
        threading.Thread(target=self._accept, args=(server, self._stop), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._stop.set()
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, server: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
