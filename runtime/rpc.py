"""gRPC plumbing shared by the agents and the controller: error mapping, server start-up with
health checking and reflection, TLS, channels. One module, so both shells behave alike.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from fusionrack.auth import Credentials, Guard, secret_interceptors
from fusionrack.emulator.errors import FusionError
from fusionrack.failover import FailoverChannel, split_addresses

__all__ = [
    "FAST_RECONNECT",
    "MAX_CONNECTIONS",
    "MAX_MESSAGE_BYTES",
    "Server",
    "TlsFiles",
    "component_files",
    "free_port_range",
    "grpc_errors",
    "open_channel",
    "run_server_loop",
    "serve_until_signalled",
    "settle",
    "start_server",
    "status_of",
]

log = logging.getLogger(__name__)

# A 4 MiB load plus framing must fit; batches may carry more. gRPC's default is 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# Keepalive: a peer that stops answering HTTP/2 pings (a SIGSTOPped agent, a frozen host) is
# noticed within ~2 s, on idle connections too, and its calls fail UNAVAILABLE, instead of at
# each call's deadline or never (a stream waiting to read). gRPC's C core answers pings
# outside the GIL, so a busy Python process is not mistaken for a hung one.
KEEPALIVE_MS = 1000
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# A server accepts its clients' pings at that rate (gRPC's default allows one in 5 minutes
# without calls and closes the connection of a client that pings more often).
_SERVER_KEEPALIVE = [
    *_KEEPALIVE,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
]
# gRPC checks credentials per call, so every connection holds memory in gRPC's core before
# anything is authenticated. A connection must finish its TLS and HTTP/2 handshakes within
# HANDSHAKE_MS (gRPC's default: 2 minutes), and a server holds at most MAX_CONNECTIONS at once
# (new ones beyond are closed at once; a client retries): thousands of a stranger's idle
# connections grew an agent by ~30 MiB per 3,000, kept after they closed.
HANDSHAKE_MS = 10_000
MAX_CONNECTIONS = 256
_SERVER_LIMITS = [
    ("grpc.server_handshake_timeout_ms", HANDSHAKE_MS),
    ("grpc.max_allowed_incoming_connections", MAX_CONNECTIONS),
]

T = TypeVar("T")


def status_of(error: FusionError) -> grpc.StatusCode:
    """The gRPC status of a domain error (the codes share names and numbers)."""
    return grpc.StatusCode[error.code.name]


def grpc_errors(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Servicer-method decorator: a domain error becomes its status with its message; anything
    else is logged and becomes INTERNAL, so no request can take the server down."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except FusionError as error:
            code, message = status_of(error), error.message
        except (grpc.aio.AbortError, AssertionError):
            raise
        except Exception:
            log.exception("%s failed", method.__qualname__)
            code, message = grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error"
        # Aborted outside the except clause: inside it, the error would ride along as the
        # AbortError's __context__, and its traceback (the handler's frames, the request and
        # all that was built from it) would stay alive in a reference cycle until the next
        # full garbage collection: hundreds of MB after a large refused request.
        await context.abort(code, message)
        raise AssertionError("unreachable")  # context.abort always raises

    return wrapper


class _Undecodable:
    """A request whose bytes do not parse as its message (stands in for it until the handler
    turns it into INVALID_ARGUMENT)."""

    def __init__(self, type_name: str, error: DecodeError) -> None:
        self.message = f"the request is not a valid {type_name} message: {error}"


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserializer`, answering bytes that do not parse with an `_Undecodable` instead of
    raising: gRPC would answer the call UNKNOWN ("Unexpected DecodeError")."""
    owner = getattr(deserializer, "__self__", None)
    type_name = owner.DESCRIPTOR.full_name if owner is not None else "request"

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return _Undecodable(type_name, error)

    return parse


class _CheckedReads:
    """A servicer context whose `read()` aborts the call with INVALID_ARGUMENT at a message
    that does not parse."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        message = await self._context.read()
        if isinstance(message, _Undecodable):
            await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.message)
        return message


async def _refuse_undecodable(message: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(message, _Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.message)


async def _checked_requests(requests: Any, context: grpc.aio.ServicerContext) -> Any:
    """A stream's requests, ending the call with INVALID_ARGUMENT at one that does not parse
    (for servicers that iterate them, as reflection's does; ours `read()`)."""
    async for message in requests:
        await _refuse_undecodable(message, context)
        yield message


def _checked(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` with a request that does not parse answered INVALID_ARGUMENT, naming the
    message type and the parse error, whatever the servicer's method is: a coroutine or an
    async generator, reading its stream's requests with `context.read()` or iterating them."""
    if handler.request_deserializer is None:
        return handler
    streaming = handler.request_streaming
    kind = ("stream_" if streaming else "unary_") + (
        "stream" if handler.response_streaming else "unary"
    )
    behavior = getattr(handler, kind)

    async def arguments(first: Any, context: grpc.aio.ServicerContext) -> tuple[Any, Any]:
        """What the servicer's method is called with: the request (a stream's requests) and
        the context."""
        if streaming:
            return _checked_requests(first, context), _CheckedReads(context)
        await _refuse_undecodable(first, context)
        return first, context

    wrapped: Any
    if inspect.isasyncgenfunction(behavior):

        async def wrapped(first: Any, context: grpc.aio.ServicerContext) -> Any:
            async for response in behavior(*await arguments(first, context)):
                yield response

    else:

        async def wrapped(first: Any, context: grpc.aio.ServicerContext) -> Any:
            answer = behavior(*await arguments(first, context))
            return await answer if inspect.isawaitable(answer) else answer

    deserializer = _tolerant(handler.request_deserializer)
    return handler._replace(request_deserializer=deserializer, **{kind: wrapped})


class _CheckedRegistration:
    """What a generated `add_XServicer_to_server` is given instead of the server: it registers
    the service's handlers `_checked`. (The generated code registers the same handlers twice,
    as a generic handler and as registered methods; the second call carries them by name.)"""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server
        self.registered = False

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # registered below, from the same handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        checked = {name: _checked(handler) for name, handler in handlers.items()}
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, checked),)
        )
        self.server.add_registered_method_handlers(service, checked)
        self.registered = True


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS. `ca` set on a server: clients must present a certificate it signed."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        if not (self.cert and self.key):
            raise ValueError("a TLS server needs both --tls-cert and --tls-key")
        pair = [(self.key.read_bytes(), self.cert.read_bytes())]
        ca = self.ca.read_bytes() if self.ca else None
        return grpc.ssl_server_credentials(pair, ca, require_client_auth=ca is not None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes() if self.ca else None,
            self.key.read_bytes() if self.key else None,
            self.cert.read_bytes() if self.cert else None,
        )

    def server_context(self) -> ssl.SSLContext:
        """The same rule as `server_credentials` for a plain TLS listener."""
        if not (self.cert and self.key):
            raise ValueError("a TLS server needs both --tls-cert and --tls-key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        if self.ca:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """The same trust as `channel_credentials` for a plain TLS connection."""
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert and self.key:
            context.load_cert_chain(self.cert, self.key)
        return context


def component_files(directory: Path, name: str) -> TlsFiles:
    """The TLS files of component `name` ("controller", a tray, "client-admin", ...) in a
    directory made by `fusionrack.certs.make_rack_certificates`. (Here, not there: the programs
    that only use the files start without importing `cryptography`, ~70 ms.)"""
    return TlsFiles(directory / f"{name}.pem", directory / f"{name}.key", directory / "ca.pem")


_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class _Health(HealthServicer):
    """gRPC's health servicer, naming the services there are when asked for another (gRPC's
    answers NOT_FOUND with no message) and answering `List` (gRPC's asyncio servicer leaves it
    unimplemented)."""

    async def Check(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if request.service not in self._server_status:
            known = ", ".join(repr(name) for name in sorted(self._server_status))
            asked = request.service[:100] + ("..." if len(request.service) > 100 else "")
            await context.abort(  # (a long name echoed whole would overflow the trailers)
                grpc.StatusCode.NOT_FOUND,
                f"no service {asked!r} on this server; its services are {known} "
                "('' is the server as a whole)",
            )
        return await super().Check(request, context)

    async def List(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


@dataclass
class Server:
    """A started gRPC server and what it serves."""

    server: grpc.aio.Server
    port: int
    address: str
    health: HealthServicer

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def run_server_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a server's `main` to completion on uvloop when it is installed, else on asyncio's
    own loop. uvloop takes ~10-20% off a gRPC hop between our processes (measured with
    bench/agents.py and bench/controller.py), which every remote op and fabric change pays."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# A graceful stop takes well under a second; one that has not ended after this is stuck.
SHUTDOWN_SECONDS = 5.0


async def serve_until_signalled(
    shutdown: Callable[[], Awaitable[None]], what: str, timeout: float = SHUTDOWN_SECONDS
) -> None:
    """Wait for SIGTERM or SIGINT, then run `shutdown()` and `settle()`, within `timeout` s.

    A stop that hangs (seen, rarely, in a loaded rack's tray agents: the gRPC or MQTT shutdown
    never completing) must not leave a process holding its ports: it is logged with the stack
    of every task still waiting, and the process exits 1 at once.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    async def stop_all() -> None:
        await shutdown()
        await settle()

    stopping = loop.create_task(stop_all(), name=f"stop {what}")
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    if done:
        stopping.result()  # raises what the stop raised
        return
    waiting = [_awaiting(task) for task in asyncio.all_tasks() - {asyncio.current_task()}]
    log.error("%s did not stop within %.0f s; exiting now. Tasks still waiting:\n%s",
              what, timeout, "\n".join(waiting))  # fmt: skip
    logging.shutdown()
    os._exit(1)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """A task and the chain of coroutines it waits in, innermost last (`Task.print_stack`
    shows only the outermost frame of a suspended coroutine)."""
    lines = [f"{task.get_name()}:"]
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "\n".join(lines)


async def settle(timeout: float = 1.0) -> None:
    """Wait (at most `timeout` s) for every other task of this loop to end: call it last, after
    the servers stopped. gRPC's `stop` returns once it has cancelled the calls still open (a
    client's stream), but their handler tasks need a few more turns of the loop; cancelled by
    the loop closing instead, gRPC logs each one as an unhandled error with a traceback."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=timeout)


async def start_server(
    services: Iterable[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]],
    listen: str = "127.0.0.1:0",
    tls: TlsFiles | None = None,
    guard: Guard | None = None,
) -> Server:
    """Start a server for `services` ((add_XServicer_to_server, servicer, full service name)
    each) with health checking and reflection. Port 0 picks a free port. `guard` (if it
    checks anything) decides who may call what."""
    # No SO_REUSEPORT (grpc's default): a second server on a taken port must fail, not share it.
    server = grpc.aio.server(
        options=[*_OPTIONS, *_SERVER_KEEPALIVE, *_SERVER_LIMITS, ("grpc.so_reuseport", 0)],
        interceptors=[guard.interceptor()] if guard is not None and guard.enabled else None,
    )
    names = [name for _, _, name in services]
    health = _Health()
    # Health checking and reflection too: bytes that do not parse are INVALID_ARGUMENT there
    # as everywhere (registered as they come, gRPC answered them UNKNOWN).
    every = [
        *services,
        (health_pb2_grpc.add_HealthServicer_to_server, health, _HEALTH),
        (
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.aio.ReflectionServicer([*names, _HEALTH, reflection.SERVICE_NAME]),
            reflection.SERVICE_NAME,
        ),
    ]
    for add, servicer, name in every:
        registration = _CheckedRegistration(server)
        add(servicer, registration)
        if not registration.registered:
            raise RuntimeError(f"{name}: its stubs registered no method handlers")
    try:
        if tls and tls.enabled:
            port = server.add_secure_port(listen, tls.server_credentials())
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc's way of saying the bind failed
        port = 0
    if not port:
        raise OSError(f"cannot listen on {listen}: the port is in use or the address is not local")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = listen.rsplit(":", 1)[0]
    return Server(server, port, f"{host}:{port}", health)


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes the local ports of outgoing connections from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port_range(span: int, host: str = "127.0.0.1", start: int = 10000) -> int:
    """A base port with `span` free ports above it on `host` (checked, then released), for
    agents started on the base-port scheme (tests, benchmarks). Below the ephemeral range when
    there is room: a port in it may be taken by any outgoing connection between this check and
    the bind."""
    low, high = _ephemeral_ports()
    below = range(start + os.getpid() % 1000 * 17, low - span, 97)
    if not below:
        below = range(start, low - span, 97)
    for base in [*below, *range(high + 1, 65536 - span, 97)]:
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + span):
                sockets.append(socket.socket())
                sockets[-1].bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise OSError(f"no {span} free consecutive ports on {host}")


# Channel options for waiting on a server that is coming up: redial every 100-200 ms rather
# than after gRPC's default backoff (1 s, growing). (Not grpc.min_reconnect_backoff_ms: that is
# how long one connection attempt may take, and a loaded agent needs its default 20 s.)
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 200),
)


def open_channel(
    target: str,
    tls: TlsFiles | None = None,
    options: Iterable[tuple[str, Any]] = (),
    credentials: Credentials | None = None,
) -> grpc.aio.Channel:
    """A channel to `target` ("host:port") with the project's message limits (and `options`);
    every call on it presents `credentials` (the rack secret, a bearer token) in its metadata.

    Several controllers of one rack, ``"host:port,host:port,..."``: a `FailoverChannel` over
    them, whose unary calls go to the next when one finds no leader (`fusionrack.failover`)."""
    addresses = split_addresses(target)
    if len(addresses) > 1:
        return FailoverChannel(  # type: ignore[return-value]  # it quacks as the stubs need
            addresses, [open_channel(a, tls, options, credentials) for a in addresses]
        )
    every = [*_OPTIONS, *_KEEPALIVE, *options]
    interceptors = secret_interceptors(credentials) or None
    if tls and tls.enabled:
        return grpc.aio.secure_channel(
            target, tls.channel_credentials(), options=every, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=every, interceptors=interceptors)
