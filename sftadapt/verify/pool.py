"""The `Verifier` process pool (see verify.py's docstring for why it exists): worker processes that run
`verify.verify_item` with math-verify's own signal timeouts, and a caller that enforces a wall-clock deadline
per item without signals, so any thread may call it. Import it from `sftadapt.verify.extract`."""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait

from sftadapt.verify.extract import Verdict, extract_answer, quick_verdict, signal_seconds, verify_item

# ---------------------------------------------------------------- the worker process
_WARMUP = (("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$."), ("1,000", "#### 1000"))
_FLUSH_SECONDS = 0.05  # results go back at the end of a chunk, or sooner once the oldest has waited this long


def _worker_main(conn, progress, signal_seconds: int | None) -> None:
    """Serve chunks of (index, gold, text) from `conn`; send back lists of (index, Verdict) in order.

    Before each item the worker writes to shared memory when the item started (`progress[0]`, on the
    system-wide monotonic clock) and then how many items it has started (`progress[1]`). The caller reads
    both to give each item its own deadline, without a message per item."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; it closes us.
    import logging
    import sys

    # Python refuses int(str) past 4300 digits; a 100,001-digit gold or answer is still a number. The
    # quadratic cost of converting one is bounded by the caller's wall-clock deadline like any other item.
    sys.set_int_max_str_digits(0)
    phase = _Phase(progress)

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for gold, text in _WARMUP:  # the first parse builds math-verify's grammars: not an item's time
        verify_item(gold, text, signal_seconds)
    conn.send(("ready", os.getpid()))
    started = 0
    while True:
        try:
            chunk = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if chunk is None:
            conn.close()
            os._exit(0)  # nothing to flush; skipping interpreter teardown (sympy's caches) saves ~0.5 s per close
        done, flushed_at = [], time.monotonic()
        for index, gold, text in chunk:
            progress[0] = time.monotonic()  # the start time first: a reader never pairs a new count with an old time
            started += 1
            progress[1] = started
            # A gold that timed out leaves phase 1 behind it (see verify_item); cleared only once the count says
            # a new item began, so a kill in between still reads as the previous gold's fault.
            progress[2] = 0.0
            try:
                result = verify_item(gold, text, signal_seconds, phase)
            except Exception as err:  # a bug or a library crash on one item must not end the worker
                result = Verdict("error", None, "none", 0.0, f"{type(err).__name__}: {err}"[:500])
            done.append((index, result))
            if time.monotonic() - flushed_at >= _FLUSH_SECONDS:
                conn.send(done)
                done, flushed_at = [], time.monotonic()
        if done:
            conn.send(done)


class _Phase:
    """`phase[0] = x` writes the worker's phase (1 = parsing the gold answer) to its shared progress record."""

    def __init__(self, progress):
        self.progress = progress

    def __setitem__(self, key: int, value: float) -> None:
        self.progress[2] = value


def _send_buffer_bytes(conn) -> int:
    """The kernel's send buffer of the pipe's socket (about 200 kB on Linux); 8 kB if it cannot be read."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except OSError:
        return 8192


class _Worker:
    """A worker process, its pipe, its shared progress record, and the items it holds: `chunks` sent and not
    yet answered (at most two), `pending` their item indices in order."""

    def __init__(self, context, signal_seconds: int | None):
        parent_conn, child_conn = context.Pipe(duplex=True)
        # [start time of the current item, items started, phase: 1 while it parses the item's gold answer]
        self.progress = context.RawArray("d", 3)
        self.process = context.Process(
            target=_worker_main,
            args=(child_conn, self.progress, signal_seconds),
            daemon=True,
            name="sftadapt-verify",
        )
        self.process.start()
        child_conn.close()  # so that the worker's death reads as EOF here
        self.conn = parent_conn
        # A second chunk may be queued behind the one being computed only if both fit in the socket buffer
        # together: then sending it never blocks, even to a worker that hangs.
        self.queue_bytes = _send_buffer_bytes(parent_conn) // 4
        self.ready = False
        self.started_at = time.monotonic()
        self.chunks: deque[tuple[int, int]] = deque()  # (items, payload bytes) per chunk in flight
        self.pending: deque[int] = deque()
        self.answered_count = 0  # results received since the worker started
        self.last_event = 0.0  # when we last sent it work while idle, or received a result

    def can_take(self, payload_bytes: int) -> bool:
        if not self.ready:
            return False
        if not self.chunks:
            return True  # idle (or about to be): it reads before it writes, so any size is safe
        return len(self.chunks) == 1 and max(self.chunks[0][1], payload_bytes) <= self.queue_bytes

    def send(self, indices: list[int], payload: bytes) -> None:
        if not self.chunks:
            self.last_event = time.monotonic()
        self.chunks.append((len(indices), len(payload)))
        self.pending.extend(indices)
        self.conn.send_bytes(payload)

    def answered(self) -> int:
        """Book one result; returns the index of the item it answers."""
        index = self.pending.popleft()
        self.answered_count += 1
        self.last_event = time.monotonic()
        size, payload_bytes = self.chunks[0]
        if size == 1:
            self.chunks.popleft()
        else:
            self.chunks[0] = (size - 1, payload_bytes)
        return index

    def current(self) -> tuple[int, float]:
        """(position in `pending` of the item being computed, when it started). Results computed but not
        yet sent come before that position."""
        started = int(self.progress[1])
        started_at = self.progress[0]
        position = started - 1 - self.answered_count
        if position < 0 or position >= len(self.pending):  # between items: the next one is due
            return 0, self.last_event
        return position, max(started_at, self.last_event)

    def take_back(self, position: int) -> tuple[int, list[int]]:
        """After a kill: the item at `position`, and every other item it held, in order, to run again."""
        held = list(self.pending)
        return held[position], held[:position] + held[position + 1 :]

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        if not self.ready and not self.pending:
            self.kill()  # still starting, holds nothing: waiting for its warm-up would cost ~1 s per close
            return
        try:
            self.conn.send_bytes(pickle.dumps(None))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2)
        self.kill()


def _failed(item: tuple[str, str], verdict: str, seconds: float, detail: str) -> Verdict:
    """The verdict for an item whose worker was killed or died. Extraction is linear-time, so it is
    redone here to record what the answer was."""
    try:
        extracted, rule = extract_answer(item[1])
    except Exception:
        extracted, rule = None, "none"
    return Verdict(verdict, extracted, rule, seconds, detail)


def _shutdown(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


# ---------------------------------------------------------------- the pool
class Verifier:
    """A pool of `workers` processes with a per-item wall-clock `timeout` (seconds). Callable from any thread
    (calls are serialised); results come back in input order. Use as a context manager or call close()."""

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 5.0,
        chunk_size: int = 8,
        start_method: str = "spawn",
        startup_timeout: float = 120.0,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if start_method == "fork":
            raise ValueError("start_method 'fork' is unsafe next to torch threads: use 'spawn' or 'forkserver'")
        self.timeout = float(timeout)
        self.chunk_size = max(1, int(chunk_size))
        self.startup_timeout = startup_timeout
        self.restarts = 0  # workers killed and replaced (after a timeout or a crash)
        self._context = multiprocessing.get_context(start_method)
        # The in-worker signal timeout is a second guard; the wall-clock deadline here is the one that binds.
        self.signal_seconds = signal_seconds(timeout)
        self._lock = threading.Lock()
        # Started now, without waiting: start-up overlaps whatever the caller does before the first batch.
        self._workers = [_Worker(self._context, self.signal_seconds) for _ in range(workers)]
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._finalizer()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (they change only when a worker is killed and replaced)."""
        return [worker.process.pid for worker in self._workers]

    def wait_ready(self) -> None:
        """Block until every worker has started and warmed up (to keep start-up out of a timing)."""
        with self._lock:
            while not all(worker.ready for worker in self._workers):
                starting = [worker for worker in self._workers if not worker.ready]
                left = min(worker.started_at for worker in starting) + self.startup_timeout - time.monotonic()
                readable = wait([worker.conn for worker in starting], timeout=max(0.0, left))
                if not readable:
                    raise RuntimeError(f"a verifier worker did not start within {self.startup_timeout:.0f} s")
                for worker in starting:
                    if worker.conn in readable:
                        try:
                            worker.conn.recv()  # ("ready", pid)
                        except (EOFError, OSError):
                            code = worker.process.exitcode
                            raise RuntimeError(f"a verifier worker died while starting (exit code {code})") from None
                        worker.ready = True

    def verify_one(self, gold: str, text: str) -> Verdict:
        return self.verify_many([gold], [text])[0]

    def verify_many(self, golds: Sequence[str], texts: Sequence[str]) -> list[Verdict]:
        """One Verdict per (gold, text) pair, in input order."""
        if len(golds) != len(texts):
            raise ValueError(f"got {len(golds)} gold answers but {len(texts)} texts")
        items = [(str(gold) if gold is not None else "", str(text)) for gold, text in zip(golds, texts)]
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("this Verifier is closed")
            try:
                # Plain numbers are decided here in microseconds (the same rule the workers apply), so a
                # batch of simple answers never waits for worker start-up or pays IPC.
                results: list[Verdict | None] = [quick_verdict(gold, text) for gold, text in items]
                rest = [i for i, verdict in enumerate(results) if verdict is None]
                for index, verdict in zip(rest, self._run([items[i] for i in rest]) if rest else []):
                    results[index] = verdict
                return results  # type: ignore[return-value]
            except BaseException:
                # Interrupted mid-batch (e.g. Ctrl-C): busy workers still hold items whose results would
                # leak into the next batch, so replace them.
                for slot, worker in enumerate(self._workers):
                    if worker.pending:
                        self._replace(slot)
                raise

    # -- internals
    def _replace(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = _Worker(self._context, self.signal_seconds)
        self.restarts += 1

    def _chunk_size(self, queued: int) -> int:
        # Small chunks near the end of a batch, so that no worker sits idle while another holds a long tail.
        return max(1, min(self.chunk_size, math.ceil(queued / (2 * len(self._workers)))))

    def _run(self, items: list[tuple[str, str]]) -> list[Verdict]:
        results: list[Verdict | None] = [None] * len(items)
        queue = deque(range(len(items)))
        remaining = len(items)
        next_chunk: tuple[list[int], bytes] = ([], b"")  # the head of the queue, pickled once
        while remaining:
            # Idle workers first, then a second chunk behind a busy one, so that a worker never waits for us.
            for slot, worker in sorted(enumerate(self._workers), key=lambda pair: len(pair[1].chunks)):
                if not queue or not worker.can_take(0):
                    continue
                indices = list(itertools.islice(queue, self._chunk_size(len(queue))))
                if next_chunk[0] != indices:
                    chunk = [(index, *items[index]) for index in indices]
                    next_chunk = (indices, pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL))
                payload = next_chunk[1]
                if not worker.can_take(len(payload)):
                    continue
                for _ in indices:
                    queue.popleft()
                try:
                    worker.send(indices, payload)
                except OSError:  # it died: what it held goes back to the queue
                    queue.extendleft(reversed(worker.pending))
                    self._replace(slot)

            deadlines = [w.current()[1] + self.timeout for w in self._workers if w.pending]
            deadlines += [w.started_at + self.startup_timeout for w in self._workers if not w.ready]
            wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            readable = wait([w.conn for w in self._workers if w.pending or not w.ready], timeout=wait_for)

            for slot, worker in enumerate(list(self._workers)):
                if worker.conn not in readable:
                    continue
                try:
                    while worker.conn.poll():
                        message = worker.conn.recv()
                        if not worker.ready:
                            worker.ready = True  # ("ready", pid)
                            continue
                        for index, verdict in message:
                            if worker.answered() != index:
                                raise RuntimeError("verifier worker answered out of order (a bug)")
                            results[index] = verdict
                            remaining -= 1
                except (EOFError, OSError):
                    if not worker.ready:
                        code = worker.process.exitcode
                        raise RuntimeError(f"a verifier worker died while starting (exit code {code})") from None
                    # Crashed on its current item (segfault, out of memory): that item is an error.
                    position, started_at = worker.current()
                    index, again = worker.take_back(position)
                    worker.process.join(timeout=1)
                    results[index] = _failed(
                        items[index],
                        "error",
                        time.monotonic() - started_at,
                        f"the verifier worker died (exit code {worker.process.exitcode})",
                    )
                    remaining -= 1
                    queue.extendleft(reversed(again))
                    self._replace(slot)

            now = time.monotonic()
            for slot, worker in enumerate(list(self._workers)):
                if not worker.ready and now > worker.started_at + self.startup_timeout:
                    raise RuntimeError(f"a verifier worker did not start within {self.startup_timeout:.0f} s")
                if not worker.pending:
                    continue
                items_started = worker.progress[1]
                position, started_at = worker.current()
                if now < started_at + self.timeout or worker.conn.poll():
                    continue  # in time, or results arrived while we were late to look: read them first
                worker.kill()
                if worker.progress[1] != items_started:
                    # It finished that item just before the kill: nothing overran; run what it held again.
                    queue.extendleft(reversed(worker.pending))
                    self._replace(slot)
                    continue
                index, again = worker.take_back(position)
                if worker.progress[2] == 1.0:  # stuck parsing the gold: the item cannot be verified at all
                    results[index] = _failed(
                        items[index],
                        "error",
                        now - started_at,
                        f"the gold answer did not parse within the {self.timeout:g} s limit",
                    )
                else:
                    results[index] = _failed(
                        items[index],
                        "timeout",
                        now - started_at,
                        f"over the {self.timeout:g} s wall-clock limit; worker killed",
                    )
                remaining -= 1
                # Its other items (done but not yet sent, or not started) go first, to any worker.
                queue.extendleft(reversed(again))
                self._replace(slot)
        return results  # type: ignore[return-value]
