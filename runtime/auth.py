"""Who may call what, shared by the agents and the controller.

Every RPC of our services has a rule (`AGENT_RULES`, `CONTROLLER_RULES`: data, checked by a
test against the protos' descriptors so a new RPC cannot go unclassified):

* `OPEN`: anyone (reads of an agent, the `Memory` service: the partition tables the switches
  enforce are what isolate a client acting as an accelerator);
* `FABRIC`: only the rack's own components: the caller presents the rack secret (gRPC metadata
  `fusionrack-rack-secret`, or `ForwardHello.rack_secret` on the framed data plane) or, with
  mutual TLS, a certificate of the rack's CA naming one of the rule's components (the
  controller reprograms switches and sets traffic, admin states and faults; compute trays speak
  on the data plane);
* `READ` / `ADMIN`: the Controller API's two roles, by certificate (`client:admin`,
  `client:read-only`), by bearer token (`authorization: Bearer <token>`) or by the rack secret
  (admin); an anonymous caller gets `Guard.anonymous` (read-only unless refused).

`Guard` holds a server's credentials and rules and checks a call once, when it starts (a server
interceptor wraps the handler; the frames of a stream are never looked at), so the data plane's
per-frame path is unchanged. A refusal is UNAUTHENTICATED (no or wrong credentials) or
PERMISSION_DENIED (valid credentials of a caller the rule does not allow), counted by method and
reason for /metrics and logged once per peer, identity and method.
"""

from __future__ import annotations

import collections
import enum
import hmac
import inspect
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.core import CounterMetricFamily, Metric

__all__ = [
    "AGENT_RULES",
    "CONTROLLER_RULES",
    "ROLES",
    "SECRET_FILE",
    "SECRET_METADATA",
    "TOKEN_FILES",
    "Access",
    "Credentials",
    "Guard",
    "Identity",
    "Refusal",
    "RefusalCollector",
    "Rule",
    "generate_secret_file",
    "generate_token_file",
    "identity_of_uris",
    "read_secret_file",
    "read_tokens",
    "secret_interceptors",
]

log = logging.getLogger(__name__)

SECRET_METADATA = "fusionrack-rack-secret"
TOKEN_METADATA = "authorization"
SECRET_BYTES = 32
# Distinct refusals logged per server: a caller hammering with new identities cannot fill memory.
MAX_LOGGED = 1024


class Access(enum.Enum):
    """What a caller needs to make a call."""

    OPEN = "open"
    FABRIC = "fabric"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Rule:
    """The access an RPC needs; for FABRIC with TLS, the components (`Identity.kind`: "controller",
    "compute") whose certificates may call it."""

    access: Access
    callers: frozenset[str] = frozenset()


_OPEN = Rule(Access.OPEN)
_BY_CONTROLLER = Rule(Access.FABRIC, frozenset({"controller"}))
_BY_COMPUTE = Rule(Access.FABRIC, frozenset({"compute"}))
_READ = Rule(Access.READ)
_ADMIN = Rule(Access.ADMIN)

_MEMORY = "fusionrack.v1.Memory"
_MEMORY_RPCS = [
    "Load",
    "Store",
    "Atomic",
    "Copy",
    "Execute",
    "ExecutePacked",
    "Stream",
    "MulticastStore",
    "MulticastLoadReduce",
    "MulticastReduce",
]

# The RPCs an agent serves (full method names as gRPC sees them).
AGENT_RULES: Mapping[str, Rule] = {
    "/fusionrack.v1.Tray/GetInventory": _OPEN,
    "/fusionrack.v1.Tray/GetStatus": _OPEN,
    "/fusionrack.v1.Tray/WatchStatus": _OPEN,
    "/fusionrack.v1.Tray/ListLinks": _OPEN,
    # Faults, admin states and traffic go through the controller (its admin role): directly on
    # an agent they would bypass it.
    "/fusionrack.v1.Tray/InjectFault": _BY_CONTROLLER,
    "/fusionrack.v1.Tray/ClearFault": _BY_CONTROLLER,
    "/fusionrack.v1.Tray/SetAdminState": _BY_CONTROLLER,
    "/fusionrack.v1.Tray/SetTraffic": _BY_CONTROLLER,
    # Partitions live in the switches' tables: only the controller may reprogram them, and only
    # compute trays may put ops on the fabric (a stranger's Forward could claim any initiator).
    "/fusionrack.v1.Switch/ApplyConfig": _BY_CONTROLLER,
    "/fusionrack.v1.Switch/GetConfig": _OPEN,
    "/fusionrack.v1.Switch/Forward": _BY_COMPUTE,
    "/fusionrack.v1.Switch/GetForwardEndpoint": _OPEN,
    **{f"/{_MEMORY}/{rpc}": _OPEN for rpc in _MEMORY_RPCS},
}

_CONTROLLER = "fusionrack.v1.Controller"
_CONTROLLER_READS = [
    "GetDomain",
    "GetTopology",
    "ListTrays",
    "ListAccelerators",
    "ListLinks",
    "GetPartition",
    "ListPartitions",
    "GetMulticastGroup",
    "ListMulticastGroups",
    "ListFaults",
    "Subscribe",
    "ListTraffic",
]
_CONTROLLER_MUTATIONS = [
    "CreatePartition",
    "DeletePartition",
    "AddAccelerators",
    "RemoveAccelerators",
    "CreateMulticastGroup",
    "DeleteMulticastGroup",
    "SetAdminState",
    "InjectFault",
    "ClearFault",
    "StartTraffic",
    "StopTraffic",
]

# The Controller API: reads need the read-only role (or admin), mutations the admin role.
CONTROLLER_RULES: Mapping[str, Rule] = {
    **{f"/{_CONTROLLER}/{rpc}": _READ for rpc in _CONTROLLER_READS},
    **{f"/{_CONTROLLER}/{rpc}": _ADMIN for rpc in _CONTROLLER_MUTATIONS},
}

ROLES = ("read-only", "admin")
# Where `fusionctl rack up` keeps them in its state directory (each 0600).
SECRET_FILE = "rack.secret"
TOKEN_FILES = {"admin": "admin.token", "read-only": "read-only.token"}


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is: `kind` "controller", "compute", "switch" (a tray;
    `name` its name) or "client" (`name` its role)."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        if self.kind == "controller":
            return "the controller"
        if self.kind == "client":
            return f"client {self.name}"
        return f"{self.kind} tray {self.name}"


def identity_of_uris(uris: Iterable[str], rack: str) -> Identity | None:
    """The identity in a certificate's URI SANs (`urn:fusionrack:<rack>:controller`,
    `...:tray:<name>`, `...:client:<role>`) for rack `rack`; None if it names none of ours."""
    prefix = f"urn:fusionrack:{rack}:"
    for uri in uris:
        if not uri.startswith(prefix):
            continue
        parts = uri[len(prefix) :].split(":")
        if parts == ["controller"]:
            return Identity("controller")
        if len(parts) == 3 and parts[0] == "tray" and parts[1] in ("compute", "switch"):
            return Identity(parts[1], parts[2])
        if len(parts) == 2 and parts[0] == "client" and parts[1] in ROLES:
            return Identity("client", parts[1])
    return None


@dataclass(frozen=True)
class Refusal:
    """Why a call is turned away: its status, a message a person can act on, and the reason
    label of the refusal counter."""

    code: grpc.StatusCode
    message: str
    reason: str


_CALLERS = {"controller": "the controller", "compute": "a compute tray"}


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


@dataclass
class Guard:
    """A server's rules and the credentials it accepts.

    `secret`: the rack secret (None: no secret). `tokens`: bearer token -> role. `tls_rack`:
    the rack whose certificate identities the server checks (None: TLS without client
    certificates, or no TLS). `anonymous`: the role of a caller with no credentials on READ and
    ADMIN rules (None: refused). FABRIC rules are checked with a secret or certificates, READ
    and ADMIN rules with tokens or certificates; without them, those calls are open.
    """

    rules: Mapping[str, Rule]
    secret: bytes | None = None
    tokens: Mapping[str, str] = field(default_factory=dict)
    tls_rack: str | None = None
    anonymous: str | None = "read-only"
    refused: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    _logged: set[tuple[str, str, str, str]] = field(default_factory=set)

    @property
    def enabled(self) -> bool:
        """Whether anything is checked (else the server is open to all, as before)."""
        return bool(self.secret or self.tokens or self.tls_rack)

    # -- the checks ------------------------------------------------------------------------

    def _secret_ok(self, presented: str | bytes | None) -> bool | None:
        """None: nothing presented; else whether it is the rack secret."""
        if presented is None:
            return None
        if isinstance(presented, str):
            try:
                presented = bytes.fromhex(presented)
            except ValueError:
                return False
        return bool(self.secret) and hmac.compare_digest(presented, self.secret or b"")

    def check(
        self,
        method: str,
        metadata: Mapping[str, str | bytes],
        identity: Identity | None,
    ) -> Refusal | None:
        """Why a call of `method` with `metadata` from a peer with certificate `identity` is
        refused (None: it may go ahead). RPCs without a rule (health, reflection) are open."""
        rule = self.rules.get(method)
        if rule is None or rule.access == Access.OPEN:
            return None
        if rule.access == Access.FABRIC:
            if not (self.secret or self.tls_rack):
                return None
            secret_ok = self._secret_ok(metadata.get(SECRET_METADATA))
            return self._check_fabric(method, rule, secret_ok, identity)
        # The roles need something to tell them apart by: a secret alone (it authenticates
        # a controller to its agents) leaves the API open.
        if not (self.tokens or self.tls_rack):
            return None
        secret_ok = self._secret_ok(metadata.get(SECRET_METADATA))
        return self._check_role(method, rule, metadata, secret_ok, identity)

    def _check_fabric(
        self, method: str, rule: Rule, secret_ok: bool | None, identity: Identity | None
    ) -> Refusal | None:
        if self.tls_rack is not None:
            # The certificate decides: it is what the handshake proved.
            if identity is not None and identity.kind in rule.callers:
                return None
            if identity is None and secret_ok:
                return None  # a certificate of no identity of ours, but the rack's secret
            who = " or ".join(sorted(_CALLERS[kind] for kind in rule.callers))
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{_short(method)} may be called only by {who}; this caller is "
                f"{identity or 'a certificate with no fusionrack identity of this rack'}",
                "wrong-identity",
            )
        if secret_ok:
            return None
        if secret_ok is None:
            return Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{_short(method)} is internal to the rack: the caller must present the rack "
                f"secret (metadata {SECRET_METADATA})",
                "no-secret",
            )
        return Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            f"{_short(method)} is internal to the rack: the rack secret presented is wrong",
            "wrong-secret",
        )

    def _check_role(
        self,
        method: str,
        rule: Rule,
        metadata: Mapping[str, str | bytes],
        secret_ok: bool | None,
        identity: Identity | None,
    ) -> Refusal | None:
        if secret_ok is False:
            return Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "the rack secret presented is wrong",
                "wrong-secret",
            )
        role: str | None
        token = metadata.get(TOKEN_METADATA)
        if secret_ok or (identity is not None and identity.kind == "controller"):
            role = "admin"  # the rack's own components may do anything through the API
        elif token is not None:
            role = self._role_of_token(token)
            if role is None:
                return Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the bearer token presented is not one of this controller's tokens",
                    "wrong-token",
                )
        elif identity is not None and identity.kind == "client":
            role = identity.name
        else:
            role = self.anonymous
            if role is None:
                return Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{_short(method)} needs credentials: a bearer token (metadata "
                    "'authorization: Bearer <token>') or a client certificate of the rack",
                    "anonymous",
                )
        if rule.access == Access.ADMIN and role != "admin":
            anonymous = "" if token or identity else " (it presented no credentials)"
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{_short(method)} needs the admin role; this caller has {role}{anonymous}",
                "role",
            )
        return None

    def _role_of_token(self, header: str | bytes) -> str | None:
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for known, role in self.tokens.items():
            # Compare with every token (no early exit) in constant time each.
            if hmac.compare_digest(token.strip().encode(), known.encode()):
                found = role
        return found

    def refuse(self, method: str, refusal: Refusal, peer: str, identity: object) -> None:
        """Count `refusal` and log it once per peer host, identity and method."""
        self.refused[_short(method), refusal.reason] += 1
        host = peer.rsplit(":", 1)[0]
        key = (host, str(identity), method, refusal.reason)
        if key not in self._logged and len(self._logged) < MAX_LOGGED:
            self._logged.add(key)
            log.warning("refused %s from %s (%s): %s", method, peer, identity or "no certificate",
                        refusal.message)  # fmt: skip

    # -- gRPC ------------------------------------------------------------------------------

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """The server interceptor that applies this guard to every call, once, at its start."""
        return _GuardInterceptor(self)

    def identity_of(self, context: grpc.aio.ServicerContext) -> Identity | None:
        """The identity in the caller's certificate (None: none, or not checked)."""
        if self.tls_rack is None:
            return None
        auth = context.auth_context()
        uris = [
            value.decode() for value in auth.get("peer_uri", ()) if isinstance(value, bytes)
        ] or [
            value.decode()
            for value in auth.get("x509_subject_alternative_name", ())
            if isinstance(value, bytes)
        ]
        return identity_of_uris(uris, self.tls_rack)

    async def admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Abort the call of `context` if the guard refuses it."""
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        identity = self.identity_of(context)
        refusal = self.check(method, metadata, identity)
        if refusal is not None:
            self.refuse(method, refusal, context.peer() or "?", identity)
            await context.abort(refusal.code, refusal.message)

    def check_hello(self, secret: bytes, identity: Identity | None, tray: str) -> Refusal | None:
        """Why a data-plane hello from compute tray `tray` presenting `secret` (empty: none),
        over a connection whose certificate names `identity`, is refused."""
        method = "/fusionrack.v1.Switch/Forward"
        refusal = self.check(method, {SECRET_METADATA: secret} if secret else {}, identity)
        if refusal is not None:
            if refusal.reason == "no-secret":
                message = "a hello on the data plane must carry the rack secret (rack_secret)"
                return Refusal(refusal.code, message, refusal.reason)
            return refusal
        if self.tls_rack is not None and identity is not None and identity.name != tray:
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this connection's certificate is {identity}'s; it cannot say hello as {tray}",
                "wrong-identity",
            )
        return None


class _GuardInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handler of every guarded RPC in a check that runs before it (once per call)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        rule = self.guard.rules.get(details.method)  # type: ignore[attr-defined]
        if handler is None or rule is None or rule.access == Access.OPEN:
            return handler
        return _guarded(handler, details.method, self.guard)  # type: ignore[attr-defined]


def _guarded(handler: grpc.RpcMethodHandler, method: str, guard: Guard) -> grpc.RpcMethodHandler:
    """`handler` with `guard.admit` in front of its behaviour. A coroutine behaviour (our
    Forward reads and writes the context) stays a coroutine: its frames do not pass through."""
    if handler.unary_unary:
        behaviour, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    elif handler.unary_stream:
        behaviour, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    elif handler.stream_unary:
        behaviour, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    else:
        behaviour, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler

    if inspect.isasyncgenfunction(behaviour):

        async def generating(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await guard.admit(method, context)
            async for response in behaviour(request, context):
                yield response

        wrapped: Callable[..., Any] = generating
    else:

        async def calling(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await guard.admit(method, context)
            return await behaviour(request, context)

        wrapped = calling
    return make(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class RefusalCollector:
    """`fusionrack_auth_refused_total{method,reason}`, read from a guard at scrape time."""

    def __init__(self, guard: Guard, labels: Mapping[str, str] | None = None) -> None:
        self.guard = guard
        self.labels = dict(labels or {})  # the server's own (rack, tray)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "fusionrack_auth_refused",
            "Calls and data-plane hellos refused for missing or wrong credentials, by method "
            "and reason (no-secret, wrong-secret, wrong-identity, wrong-token, anonymous, role)",
            labels=[*self.labels, "method", "reason"],
        )
        for (method, reason), count in sorted(self.guard.refused.items()):
            family.add_metric([*self.labels.values(), method, reason], count)
        yield family


# -- what callers present -------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What a component or client presents on its calls: the rack secret and/or a bearer
    token (TLS certificates go in the channel's `TlsFiles`)."""

    secret: bytes | None = None
    token: str | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs = []
        if self.secret:
            pairs.append((SECRET_METADATA, self.secret.hex()))
        if self.token:
            pairs.append((TOKEN_METADATA, f"Bearer {self.token}"))
        return tuple(pairs)

    def __bool__(self) -> bool:
        return bool(self.secret or self.token)


class _Metadata:
    """Adds the credentials' metadata to the calls a subclass intercepts. One interceptor per
    call kind: grpc.aio files an interceptor under the first kind it implements only, so one
    object implementing all four would intercept unary-unary calls alone."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = pairs

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self.pairs)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials,
            details.wait_for_ready,
        )  # fmt: skip


class _UnaryUnary(_Metadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def, override]
        return await continuation(self._details(details), request)


class _UnaryStream(_Metadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def, override]
        return await continuation(self._details(details), request)


class _StreamUnary(_Metadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def, override]
        return await continuation(self._details(details), requests)


class _StreamStream(_Metadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def, override]
        return await continuation(self._details(details), requests)


def secret_interceptors(credentials: Credentials | None) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that present `credentials` on every call (none for none)."""
    if not credentials:
        return []
    pairs = credentials.metadata()
    return [kind(pairs) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


# -- files ----------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)


def generate_secret_file(path: Path) -> bytes:
    """The rack secret in `path`, made (32 random bytes, hex, mode 0600) if it is missing, so a
    rack keeps its secret across down and up."""
    if path.exists():
        return read_secret_file(path)
    secret = secrets.token_bytes(SECRET_BYTES)
    _write_private(path, secret.hex().encode() + b"\n")
    return secret


def read_secret_file(path: Path) -> bytes:
    """The rack secret in `path` (hex); ValueError says what is wrong with the file."""
    try:
        text = path.read_text().strip()
    except OSError as error:
        raise ValueError(f"cannot read the rack secret {path}: {error.strerror}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path} does not hold a rack secret (hex digits)") from None
    if len(secret) < 16:
        raise ValueError(f"{path}: a rack secret has at least 16 bytes (32 hex digits)")
    return secret


def generate_token_file(path: Path) -> str:
    """A bearer token in `path`, made (mode 0600) if it is missing."""
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(SECRET_BYTES)
    _write_private(path, token.encode() + b"\n")
    return token


def read_tokens(files: Mapping[str, Path]) -> dict[str, str]:
    """Token -> role from {role: token file}; ValueError names an unreadable or empty file."""
    tokens = {}
    for role, path in files.items():
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: the roles are {', '.join(ROLES)}")
        try:
            token = path.read_text().strip()
        except OSError as error:
            raise ValueError(f"cannot read the {role} token {path}: {error.strerror}") from None
        if not token:
            raise ValueError(f"the {role} token file {path} is empty")
        tokens[token] = role
    return tokens
