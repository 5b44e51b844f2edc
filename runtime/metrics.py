"""Prometheus plumbing both shells share: a registry that renders fast, the HTTP server that
serves it on the asyncio loop, and a plain histogram a collector reads at scrape time.

Exporters register custom collectors on a fresh `MetricsRegistry` (never the global registry,
and so no ``_created`` series): collectors that can render themselves (`render_into(out)`, as
the agent's do) skip `generate_latest`; any other collector (`collect()` only, as the
controller's) is rendered by it. `start_metrics_server` serves `registry.render()` on
``GET /metrics``. The metrics themselves are documented in docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import urllib.parse
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fusionrack.cli import split_listen  # re-exported: the servers' addresses are parsed there

__all__ = [
    "CONTENT_TYPE",
    "Histogram",
    "MetricsRegistry",
    "MetricsServer",
    "split_listen",
    "start_metrics_server",
]

log = logging.getLogger(__name__)

# The text format every Prometheus scrapes (prometheus_client >= 0.21 calls it
# CONTENT_TYPE_PLAIN_0_0_4; spelled out for the older versions pyproject allows).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Observations in cumulative buckets, as plain numbers: the hot path bumps a list slot, a
    collector builds the histogram family from `buckets()` and `total` at scrape time."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bucket bounds must be increasing and distinct: {bounds}")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last: +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (upper bound, count) pairs ending with ("+Inf", count), as Prometheus
        wants them (an observation equal to a bound falls in that bound's bucket)."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((floatToGoString(bound), float(running)))
        return out


class MetricsRegistry(CollectorRegistry):
    """A `CollectorRegistry` that renders this module's collectors without `generate_latest`.

    Other collectors registered on it (anything with `collect()`) are rendered by
    `generate_latest`, in registration order, exactly as `generate_latest(registry)` would.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._ordered: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._ordered.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self._ordered.remove(collector)

    def render(self) -> bytes:
        """The text exposition (format 0.0.4) of every collector, as `generate_latest` gives."""
        if self.get_target_info():
            return generate_latest(self)
        out: list[str] = []
        for collector in list(self._ordered):
            render_into = getattr(collector, "render_into", None)
            if render_into is not None:
                render_into(out)
            else:
                out.append(generate_latest(collector).decode())
        return "".join(out).encode()


# -- HTTP ------------------------------------------------------------------------------------

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}
_MAX_BODY = 64 * 1024


class MetricsServer:
    """Serves ``GET /metrics`` of one registry on the running asyncio loop.

    Why not prometheus_client's threaded server: a scrape rendered on the loop blocks it for the
    render time only (about a millisecond for a 144-port switch tray), and it sees the counters
    between two data plane steps, never halfway through one. A scraping thread would contend
    for the GIL with the loop for the whole scrape (PERFORMANCE.md: ~5 ms p50 / 17 ms p99 of
    delayed wake-ups) and read the arrays while the loop writes them.

    HTTP/1.1 with keep-alive (Prometheus reuses its connection); ``HEAD`` is answered too;
    anything but ``/metrics`` is 404. No gzip: scrapes stay on loopback or a rack network.

    Anyone may connect, so what connections cost is bounded: a new one must send its request
    within REQUEST_TIMEOUT, and at most MAX_CONNECTIONS are open at once; one beyond closes
    the connection that has waited longest for its next request (a kept-alive scraper just
    reconnects), or is closed itself when every one is busy. (Thousands of a stranger's idle
    connections grew an agent by ~16 MiB per 3,000, kept after they closed.)
    """

    IDLE_TIMEOUT = 300.0  # seconds a kept-alive connection may wait for its next request
    REQUEST_TIMEOUT = 10.0  # seconds to receive a request's headers (and body), the first too
    MAX_CONNECTIONS = 64

    def __init__(self, registry: CollectorRegistry, host: str) -> None:
        self.registry = registry
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        # The connections waiting for their next request, longest waiting first.
        self._waiting: dict[asyncio.Task, None] = {}
        self.turned_away = 0  # connections closed because MAX_CONNECTIONS were open
        self._warned = False
        render = getattr(registry, "render", None)
        self._render: Callable[[], bytes] = render or (lambda: generate_latest(registry))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def _start(self, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, port, limit=16 * 1024, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, close every open connection and wait for their handlers."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        # Closing a connection ends its handler (its read sees EOF, its write fails).
        for writer in list(self._connections.values()):
            writer.close()
        tasks = list(self._connections)
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=self.REQUEST_TIMEOUT)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _make_room(self) -> bool:
        """Below MAX_CONNECTIONS, closing the connection that has waited longest for its next
        request if need be; False when every connection is busy with a request."""
        if len(self._connections) < self.MAX_CONNECTIONS:
            return True
        self.turned_away += 1
        if not self._warned:
            self._warned = True
            log.warning("%d connections open on %s: closing the longest idle to make room for "
                        "each new one (logged once)", self.MAX_CONNECTIONS, self.url)  # fmt: skip
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        del self._waiting[oldest]
        self._connections[oldest].close()  # its read sees EOF: its handler ends
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not self._make_room():
            writer.close()
            return
        self._connections[task] = writer
        try:
            first = True
            while await self._one_request(reader, writer, task, first):
                first = False
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:  # a handler must never die loudly inside asyncio's callback
            log.exception("metrics connection failed")
        except asyncio.CancelledError:
            # Only close() (or the loop shutting down) cancels a handler, and nothing awaits
            # it: ending normally spares Python 3.11's stream callback, which calls
            # task.exception() on it and would log the CancelledError as an error.
            pass
        finally:
            self._connections.pop(task, None)
            self._waiting.pop(task, None)
            writer.close()

    async def _one_request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        task: asyncio.Task,
        first: bool,
    ) -> bool:
        """Answer one request (the connection's `first`, or a kept-alive one's next); True to
        keep the connection for another."""
        try:
            self._waiting[task] = None
            try:
                async with asyncio.timeout(self.REQUEST_TIMEOUT if first else self.IDLE_TIMEOUT):
                    line = await reader.readline()
            finally:
                self._waiting.pop(task, None)
            if not line:
                return False  # the client closed an idle connection
            async with asyncio.timeout(self.REQUEST_TIMEOUT):
                headers = await _read_headers(reader)
        except ValueError:  # a line longer than the stream limit
            await _respond(writer, 400, b"request line or header too long\n", keep=False)
            return False
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _respond(writer, 400, b"malformed request line\n", keep=False)
            return False
        method, target, version = parts
        connection = headers.get("connection", "").lower()
        keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        if "transfer-encoding" in headers:
            await _respond(writer, 501, b"chunked request bodies are not supported\n", keep=False)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            await _respond(writer, 413 if length > 0 else 400, b"bad request body\n", keep=False)
            return False
        if length:
            async with asyncio.timeout(self.REQUEST_TIMEOUT):
                await reader.readexactly(length)  # a GET has no use for a body: drop it

        path = urllib.parse.urlsplit(target).path  # also absolute-form targets
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, b"only GET and HEAD\n", keep, [("Allow", "GET, HEAD")])
        elif path != "/metrics":
            await _respond(writer, 404, b"not found: metrics are at /metrics\n", keep)
        else:
            try:
                body = self._render()
            except Exception:
                log.exception("rendering /metrics failed")
                await _respond(writer, 500, b"rendering the metrics failed\n", keep)
            else:
                ctype = CONTENT_TYPE
                await _respond(writer, 200, body, keep, content_type=ctype, head=method == "HEAD")
        return keep


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(100):
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError("too many headers")


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    keep: bool,
    extra: Sequence[tuple[str, str]] = (),
    *,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep else 'close'}",
        *(f"{name}: {value}" for name, value in extra),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(body)
    await writer.drain()


async def start_metrics_server(
    registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0
) -> MetricsServer:
    """Serve `registry` on ``http://host:port/metrics`` (port 0: a free one, see ``.port``)."""
    server = MetricsServer(registry, host)
    await server._start(port)
    return server
