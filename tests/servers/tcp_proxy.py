"""A TCP proxy on 127.0.0.1 that forwards to a real server, or holds connections as a hung server does.

Test infrastructure for the openai backend's failover tests. In `forward` mode every new connection is piped to
the target, byte for byte, both ways; in `hold` mode a new connection is accepted and then left alone: nothing is
read, forwarded or answered (a server whose process is alive but stuck), until the client gives up or `stop()`.
The mode applies to connections accepted after it is set; `held` and `forwarded` count connections of each kind.

    with TcpProxy(server.port) as proxy:
        proxy.hold()      # requests to proxy.base_url now hang
        proxy.forward()   # and now reach the server again
"""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self.held = self.forwarded = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def hold(self) -> None:
        self.mode = "hold"

    def forward(self) -> None:
        self.mode = "forward"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # the listener was closed
                return
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._sockets.append(client)
                if self.mode == "hold":
                    self.held += 1
                    continue
                self.forwarded += 1
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):  # one side ended: end the other, as a real connection would
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        try:  # wakes the accept() blocked in the proxy's thread (a close alone does not, on Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
