"""Which server the `openai` backend sends a request to, and which servers are out of the rotation.

`ServerPool` holds one entry per base URL: its requests in flight, its failures in a row and whether it is in the
rotation. A request goes to the server in the rotation with the fewest requests in flight (`least_loaded`; ties
round-robin), never to one already holding `capacity` requests; a retry prefers another server than the one that
just failed. A server leaves the rotation when

- it fails `max_failures` times in a row (the caller reports each outcome to `release`: connection refused or
  reset, a timeout, a 5xx count; a 429 or a 4xx row error does not), or
- it stalls: a request of its has been in flight longer than `stall_timeout` and the server does not answer a
  health probe either. A long generation on a busy server sends nothing until it is done, so a slow request
  alone proves nothing; a server that cannot answer `GET /health` within the probe time is hung. Its requests
  in flight are aborted (their sockets shut down), and their callers retry them elsewhere with the same body.

A watch thread (one per pool, from `watch()` to `close()`; a later `watch()` starts another) does both checks: stalls every tick, and a
health probe of each server out of the rotation every `health_interval` seconds, at once and every tick while
callers wait because every server is out. A probe that answers puts the server back with a clean record.
The probe itself (which path, which timeout) is the caller's function, so this module knows no HTTP.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def least_loaded(loads: Sequence[int], usable: Sequence[bool], start: int) -> int | None:
    """The usable index with the fewest requests in flight; among equals the first at or after `start`
    (cyclically), so that equal servers take turns. None when nothing is usable."""
    best = None
    for k in range(len(loads)):
        i = (start + k) % len(loads)
        if usable[i] and (best is None or loads[i] < loads[best]):
            best = i
    return best


class Ticket:
    """One request on one server: the caller hands its connection over, so that a stall can abort it."""

    def __init__(self, url: str, started: float):
        self.url, self.started = url, started
        self.conn: Any = None  # an http.client connection while the request is on the wire
        self.aborted = False

    def abort(self) -> None:
        # shutdown, not close: the caller's thread is blocked reading this socket and closes it itself; shutting
        # it down wakes that read at once with an end of stream
        self.aborted = True
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@dataclass
class _Server:
    url: str
    inflight: list[Ticket] = field(default_factory=list)
    failures: int = 0  # in a row
    out: bool = False
    why: str = ""  # the last failure, for the one-line error
    last_probe: float = float("-inf")
    last_ok: float = float("-inf")  # the last probe that answered, while a request of this server ran long
    served: int = 0  # responses taken from it


class ServerPool:
    def __init__(
        self,
        urls: Sequence[str],
        capacity: int,
        max_failures: int,
        stall_timeout: float,
        health_interval: float,
        probe: Callable[[str, float], bool],
        stats: dict[str, Any] | None = None,
    ):
        self.servers = [_Server(u) for u in urls]
        self.capacity, self.max_failures = capacity, max_failures
        self.stall_timeout, self.health_interval = stall_timeout, health_interval
        # a probe of a hung server waits this long; a healthy server answers /health in milliseconds
        self.probe_timeout = min(10.0, stall_timeout)
        self.tick = min(0.5, stall_timeout / 4, health_interval)
        self._probe = probe
        self.stats = stats if stats is not None else {}
        for k in ("servers_out", "servers_back", "stalls"):
            self.stats.setdefault(k, 0)
        self._cond = threading.Condition()
        self._next = 0  # where the round-robin among equally loaded servers goes on
        self._starved = 0  # callers waiting because every server is out
        self._rounds = 0  # probe passes over the servers out of the rotation
        self._watching = 0  # the running watch thread's number; close() moves it on, which ends that thread
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------ the callers' side
    def acquire(self, avoid: str | None, wait: float) -> Ticket | None:
        """A ticket on the least-loaded server in the rotation (another than `avoid` where one has room).

        Waits while the servers in the rotation are all at capacity (they are busy, not failing). While every
        server is out it waits for the health probes' verdict and at least `wait` seconds, then gives None."""
        with self._cond:
            deadline, first_round, starved = time.monotonic() + wait, self._rounds, False
            try:
                while True:
                    index = self._pick(avoid)
                    if index is not None:
                        server = self.servers[index]
                        ticket = Ticket(server.url, time.monotonic())
                        server.inflight.append(ticket)
                        self._next = index + 1
                        return ticket
                    if any(not s.out for s in self.servers):
                        self._cond.wait()  # a release or a server leaving the rotation wakes us
                        continue
                    if not starved:
                        starved, self._starved = True, self._starved + 1
                        self._cond.notify_all()  # the watcher probes now rather than after health_interval
                    now = time.monotonic()
                    if now >= deadline and (self._rounds > first_round or self._watcher is None):
                        return None
                    self._cond.wait(max(deadline - now, self.tick))
            finally:
                self._starved -= starved

    def release(self, ticket: Ticket, outcome: str, why: str = "") -> None:
        """The request is over: `ok` (the server answered; its failure streak ends), `fail` (counts towards
        max_failures) or `neutral` (a 429, or a request aborted by a stall: the server is judged already)."""
        with self._cond:
            server = self._server(ticket.url)
            if ticket in server.inflight:
                server.inflight.remove(ticket)
            if ticket.aborted:
                outcome = "neutral"
            if outcome == "ok":
                server.failures, server.served = 0, server.served + 1
            elif outcome == "fail":
                server.failures += 1
                server.why = why or server.why
                if server.failures >= self.max_failures and not server.out:
                    self._take_out(server, f"{server.failures} failures in a row, the last: {server.why}")
            self._cond.notify_all()

    def take_out(self, url: str, why: str) -> None:
        with self._cond:
            server = self._server(url)
            server.why = why
            if not server.out:
                self._take_out(server, why)

    def describe(self) -> str:
        """The servers out of the rotation and why, for an error line."""
        with self._cond:
            return "; ".join(f"{s.url}: {s.why}" for s in self.servers if s.out) or "none"

    def state(self) -> dict[str, dict]:
        """Per server: in rotation or not, requests in flight, responses taken, the reason it is out."""
        with self._cond:
            return {
                s.url: {"out": s.out, "inflight": len(s.inflight), "served": s.served, "why": s.why}
                for s in self.servers
            }

    def _server(self, url: str) -> _Server:
        return next(s for s in self.servers if s.url == url)

    def _pick(self, avoid: str | None) -> int | None:
        loads = [len(s.inflight) for s in self.servers]
        usable = [not s.out and len(s.inflight) < self.capacity for s in self.servers]
        start = self._next % len(self.servers)
        if avoid is not None:
            other = least_loaded(loads, [u and s.url != avoid for u, s in zip(usable, self.servers)], start)
            if other is not None:
                return other
        return least_loaded(loads, usable, start)

    def _take_out(self, server: _Server, why: str) -> None:
        server.out, server.why = True, why
        server.last_probe = time.monotonic()  # the first health probe comes health_interval later
        self.stats["servers_out"] += 1
        self._cond.notify_all()

    # ------------------------------------------------------------ the watcher
    def watch(self) -> None:
        """Start the watch thread unless one runs; it ends with `close`."""
        with self._cond:
            if self._watcher is None:
                self._watching += 1
                self._watcher = threading.Thread(
                    target=self._watch, args=(self._watching,), name="openai-server-watch", daemon=True
                )
                self._watcher.start()

    def close(self) -> None:
        """End the watch thread (at its next tick, or after the probe it is waiting on); the pool stays usable."""
        with self._cond:
            self._watching += 1
            self._watcher = None
            self._cond.notify_all()

    def _watch(self, number: int) -> None:
        while True:
            with self._cond:
                self._cond.wait(self.tick)
                if self._watching != number:
                    return
            self._check_stalls()
            self._check_out()

    def _check_stalls(self) -> None:
        now = time.monotonic()
        with self._cond:
            suspects = [
                s.url
                for s in self.servers
                if not s.out
                and now - s.last_ok > self.stall_timeout
                and any(now - t.started > self.stall_timeout for t in s.inflight)
            ]
        for url in suspects:
            answered = self._probe(url, self.probe_timeout)
            with self._cond:
                server = self._server(url)
                if answered:  # busy, not hung: look again in stall_timeout
                    server.last_ok = time.monotonic()
                    continue
                stuck = [t for t in server.inflight if time.monotonic() - t.started > self.stall_timeout]
                if not server.out:
                    self._take_out(
                        server,
                        f"stalled: no response within {self.stall_timeout:g} s and no answer to a health probe",
                    )
                self.stats["stalls"] += len(stuck)
            for ticket in stuck:
                ticket.abort()

    def _check_out(self) -> None:
        now = time.monotonic()
        with self._cond:
            every = self._starved > 0 and all(s.out for s in self.servers)
            due = [
                s.url
                for s in self.servers
                if s.out and now - s.last_probe >= (self.tick if every else self.health_interval)
            ]
        if not due:
            return
        answers = {url: self._probe(url, self.probe_timeout) for url in due}
        with self._cond:
            for url, answered in answers.items():
                server = self._server(url)
                server.last_probe = time.monotonic()
                if answered and server.out:
                    server.out, server.failures, server.last_ok = False, 0, time.monotonic()
                    self.stats["servers_back"] += 1
            self._rounds += 1
            self._cond.notify_all()
