"""The MQTT publisher both shells share: a bounded outbox, a broker that may come and go, and
the ``mqtt://`` URL.

gRPC is the source of truth; MQTT only mirrors it (DESIGN.md, "Events (MQTT)"). What is
published where, and every field of every document, is the contract's: the header of
``proto/fusionrack/v1/events.proto``. `fusionrack.agent.mqtt` (a tray's status and events) and
`fusionrack.controller.mqtt` (the controller's status, events and partition state) say which of
those topics they publish; `fusionrack.mqtt_documents` makes the documents (the event envelope,
the status document, strict JSON). This module delivers them, the same way for every publisher:

* **Events** (QoS 1, not retained): `publish_event` queues a v1 `Event`'s envelope
  (`event_document`) on ``<events_topic>/<kind in lower case>``.
* **Status** (retained, QoS 1): a status document, republished on every (re)connection. The
  connection's MQTT last will sets it to ``offline`` (retained), so the broker itself announces a
  process that crashed or lost its network; a clean `stop()` publishes ``offline`` too.
* **Retained state** (QoS 1, retained; optional): a document per topic that says how something
  is *now* (`set_retained`). Only the latest document of a topic is kept (a burst of changes is
  one message); every held document is republished on each (re)connection; `None` clears the
  topic with an empty retained message and is forgotten once the broker acknowledged it. With
  `reap`, a topic filter the publisher owns, it also clears retained messages it finds under
  that filter and does not hold (left by an earlier run that stopped before it could clear
  them), so a late subscriber sees exactly the present.

The control plane never waits on the broker: `publish_event()`, `enqueue()`, `set_status()` and
`set_retained()` are synchronous and never touch the network. When the outbox is full the
OLDEST queued event is dropped (the newest say most about the present) and counted in
`dropped`. One owned background task connects, announces the status, sends the retained state,
drains the outbox with up to `max_inflight` QoS 1 publishes in flight, and on any failure (no
broker, broker gone, an ack timing out) reconnects with capped, jittered exponential backoff.
Events whose PUBACK had not arrived when a connection broke go back to the head of the outbox
and are sent again: delivery is at least once, and ``event_id`` lets subscribers drop
duplicates. `hold()` stands a publisher aside (disconnected, status untouched, events dropped)
until `release()`: a rack's controllers share one voice, the leader's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.client import MQTT_ERR_SUCCESS

from fusionrack.mqtt_documents import encode, event_document, status_document
from fusionrack.tasks import BackgroundTasks
from fusionrack.v1 import events_pb2

__all__ = ["MqttPublisher", "parse_mqtt_url"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
KEEPALIVE = 30  # s; a half-open connection is noticed by the broker after 1.5x this
TIMEOUT = 5.0  # s; CONNACK and PUBACK waits (aiomqtt's default is 10 s)
STOP_TIMEOUT = 2.0  # s; flush + offline status on stop before the task is cancelled


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` -> (host, port); the port defaults to 1883. ValueError otherwise."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"MQTT URL must be a non-empty string like mqtt://127.0.0.1:1883: {url!r}")
    parts = urlsplit(url)
    if parts.scheme != "mqtt":
        hint = " (TLS is not supported yet)" if parts.scheme == "mqtts" else ""
        raise ValueError(f"MQTT URL must start with mqtt://{hint}: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"MQTT URL must not carry credentials: {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"MQTT URL must be mqtt://HOST[:PORT] with nothing after: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"MQTT URL has a bad port (1-65535): {url!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    if port == 0:
        raise ValueError(f"MQTT URL has a bad port (1-65535): {url!r}")
    return host, DEFAULT_PORT if port is None else port


class MqttPublisher:
    """One process's status, events and retained state on MQTT; see the module docstring.

    `source` is what every document says in ``source`` (the v1 `Event.source` of what it
    publishes: ``controller`` or a tray's name); `label` names it in logs (default: `source`).
    `publish_event()` sends v1 events under `events_topic`.

    `publish_event()`, `enqueue()`, `set_status()` and `set_retained()` are synchronous and must
    be called from the event loop's thread; they may be called before `start()` (messages wait).
    `start()` returns
    at once; `stop()` flushes what is queued if connected (within `stop_timeout`), publishes the
    retained ``offline`` status, disconnects and awaits the task. Counters for metrics:
    `published` (events acknowledged by the broker), `dropped` (events lost because the outbox
    was full, or queued after `stop()` began), `connected`, `connections` (successful
    connections), `connect_failures` (attempts that did not reach a connection). Retained state
    is not counted: it is state, not events, and it is never dropped (only superseded).
    """

    def __init__(
        self,
        url: str,
        *,
        source: str,
        status_topic: str,
        client_id: str,
        events_topic: str = "",
        label: str | None = None,
        outbox_size: int = 1024,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        max_inflight: int = 16,
        counts: MutableMapping[str, int] | None = None,
        reap: str | None = None,
    ) -> None:
        self.host, self.port = parse_mqtt_url(url)
        if outbox_size < 1:
            raise ValueError(f"outbox_size must be >= 1: {outbox_size}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                f"need 0 < backoff_initial <= backoff_max: {backoff_initial}, {backoff_max}"
            )
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1: {max_inflight}")
        self.url = url
        self.source = source
        self.label = label or source
        self.status_topic = status_topic
        self.events_topic = events_topic
        # A fixed id per publisher: a restarted process takes over its predecessor's session at
        # once (the broker closes the stale one) instead of having a half-open one's will fire
        # later.
        self.client_id = client_id
        self.reap = reap
        self.outbox_size = outbox_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_inflight = max_inflight
        self.stop_timeout = STOP_TIMEOUT  # s; an attribute so tests and callers may change it
        self.ack_timeout = TIMEOUT  # s; CONNACK and PUBACK waits (likewise)

        self.published = 0
        self.dropped = 0
        # Also bumped, when given: a counter that /metrics exports ("published", "dropped").
        self._counts: MutableMapping[str, int] = counts if counts is not None else {}
        self.connected = False
        self.connections = 0
        self.connect_failures = 0

        self._outbox: deque[tuple[str, bytes]] = deque()
        self._retained: dict[str, bytes | None] = {}  # topic -> latest document (None: clear)
        self._retained_dirty: dict[str, None] = {}  # topics to (re)send, in order (a set)
        self._status = "online"
        self._details: dict[str, Any] = {}
        self._status_time: float | None = None  # set by set_status() or start()
        self._status_dirty = False
        self._wakeup = asyncio.Event()  # outbox, status or retained state changed, or stopping
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._held = asyncio.Event()  # set by hold(): no connection until release()
        self._released = asyncio.Event()
        self._released.set()
        # The one background task, the publisher's loop (`_run`), logged if it dies.
        self._tasks = BackgroundTasks(f"mqtt {self.label}")
        self._task: asyncio.Task[None] | None = None
        self._had_connection = False  # in the current attempt
        self._rng = random.Random()

    # -- the control plane's side: never blocks, never touches the network ----------------

    @property
    def pending(self) -> int:
        """Events waiting in the outbox (not counting the few in flight)."""
        return len(self._outbox)

    @property
    def status(self) -> str:
        return self._status

    def retained(self, topic: str) -> bytes | None:
        """The document held for `topic` (None: none, or a clear not yet acknowledged)."""
        return self._retained.get(topic)

    def publish_event(self, event: events_pb2.Event) -> None:
        """Queue v1 `event` on ``<events_topic>/<kind>`` in the envelope (`event_document`);
        drops (and counts) the oldest queued event when full. ValueError for an event whose time
        or kind cannot be written (nothing is queued)."""
        doc = event_document(event)
        topic = f"{self.events_topic}/{doc['kind'].lower()}"
        self.enqueue(topic, encode(doc, "body", self.label))

    def enqueue(self, topic: str, payload: bytes) -> None:
        """Queue one event for `topic`; drops (and counts) the oldest queued one when full."""
        if self._stopping or self._held.is_set():
            # Expected, not worth a warning: a stopping tray's links go down after its
            # publisher has said "offline"; a held publisher stands aside.
            why = "the publisher is stopping" if self._stopping else "the publisher is held"
            self._count_drop(1, why, logging.DEBUG)
            return
        if len(self._outbox) >= self.outbox_size:
            self._outbox.popleft()
            self._count_drop(1, f"outbox full ({self.outbox_size})")
        self._outbox.append((topic, payload))
        self._wakeup.set()

    def set_status(self, status: str, **details: Any) -> None:
        """Set the retained status ("online", "draining", ...); sent now if connected, and on
        every reconnection. `details` (JSON-friendly) go in the document's ``details``."""
        if not isinstance(status, str) or not status:
            raise ValueError(f"status must be a non-empty string: {status!r}")
        self._status = status
        self._details = json.loads(encode({"details": details}, "details", self.label))["details"]
        self._status_time = time.time()
        self._status_dirty = True
        self._wakeup.set()

    def set_retained(self, topic: str, payload: bytes | None) -> None:
        """Hold `payload` as `topic`'s retained document (None: clear the topic); sent as soon
        as connected, superseding what was not sent yet, and again on every reconnection."""
        if payload is not None and not payload:
            raise ValueError("a retained document must not be empty (None clears the topic)")
        if self._retained.get(topic, b"") == payload and topic not in self._retained_dirty:
            return  # the broker has it already (or will, on the next connection)
        self._retained[topic] = payload
        self._retained_dirty[topic] = None
        self._wakeup.set()

    def _count_drop(self, n: int, why: str, level: int = logging.WARNING) -> None:
        before = self.dropped
        self.dropped += n
        self._counts["dropped"] = self._counts.get("dropped", 0) + n
        # Log at 1, 2, 4, 8... drops: visible without flooding the log while the broker is away.
        if self.dropped.bit_length() > before.bit_length():
            log.log(level, "mqtt %s: dropped %d event(s) so far: %s", self.label, self.dropped, why)

    def _status_doc(self, status: str, when: float, details: dict[str, Any]) -> bytes:
        return status_document(self.source, status, when, details)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background task and return at once (the broker may well be absent)."""
        if self._task is not None or self._stopping:
            raise RuntimeError(f"mqtt publisher {self.label} was already started")
        if self._status_time is None:
            self._status_time = time.time()
        self._task = self._tasks.start("publisher", self._run_until_stopped())

    @property
    def held(self) -> bool:
        return self._held.is_set()

    def hold(self) -> None:
        """Stand aside until `release()`: end the connection now, without flushing and without
        a status (a clean disconnect: the will does not fire), and connect no more. What is
        queued, and what is queued meanwhile, is dropped (counted). For a publisher that
        speaks for something only while it holds a role, e.g. a rack's leading controller:
        the status and retained documents stay as it left them, for the next holder of the
        role (the same client id, which takes over any session left behind) to replace."""
        if self._held.is_set():
            return
        self._held.set()
        self._released.clear()
        self._wakeup.set()
        dropped = len(self._outbox)
        self._outbox.clear()
        if dropped:
            self._count_drop(dropped, "the publisher is held", logging.INFO)

    def release(self) -> None:
        """Connect again (if started): status and retained documents are sent anew."""
        self._held.clear()
        self._released.set()

    def may_connect(self) -> bool:
        """Asked before every connection attempt; False holds the publisher (a subclass's
        role check, e.g. a controller's leadership, in case nobody called `hold()` yet)."""
        return True

    async def stop(self) -> None:
        """Flush (if connected), publish retained ``offline``, disconnect, await the task."""
        self._stopping = True
        self._stop_requested.set()
        self._wakeup.set()
        task = self._task
        if task is None or task.done():
            await self._tasks.stop()  # nothing left to wait for (a death was logged)
            return
        try:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.stop_timeout)
            except TimeoutError:
                log.warning(
                    "mqtt %s: not stopped after %.1f s, cancelling", self.label, self.stop_timeout
                )
            except Exception:
                pass  # the task died of it, and its owner (`_tasks`) logged it
            await self._tasks.stop()  # cancels a task that outlived stop_timeout, awaits it
        except asyncio.CancelledError:
            task.cancel()  # we are being cancelled ourselves: do not leave the task behind
            raise
        finally:
            left = len(self._outbox)
            if left:
                log.warning("mqtt %s: %d event(s) not delivered at stop", self.label, left)

    async def __aenter__(self) -> MqttPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run_until_stopped(self) -> None:
        """The publisher's task: `_run`, and not connected however it ends."""
        try:
            await self._run()
        finally:
            self.connected = False

    async def _run(self) -> None:
        delay = self.backoff_initial
        quiet = False  # after the first failure in a row, retries log at DEBUG only
        while not self._stopping:
            if self._released.is_set() and not self.may_connect():
                self.hold()
            if not self._released.is_set():
                await _first(self._released.wait(), self._stop_requested.wait())
                continue
            client = self._new_client()
            self._had_connection = False
            try:
                await self._session(client)
                if self._stopping:
                    return  # a clean stop
                if self._outbox:  # held: what was in flight came back
                    self._count_drop(len(self._outbox), "the publisher is held", logging.INFO)
                    self._outbox.clear()
                continue
            except Exception as exc:
                if self._stopping:
                    return  # nothing to retry for; the broker has our will
                if self._had_connection:
                    delay, quiet = self.backoff_initial, False
                else:
                    self.connect_failures += 1
                level = logging.DEBUG if quiet else logging.WARNING
                unexpected = not isinstance(_leaf(exc), aiomqtt.MqttError)
                if unexpected:
                    level = logging.ERROR
                wait = delay * self._rng.uniform(0.5, 1.0)
                log.log(
                    level,
                    "mqtt %s: %s %s:%d: %s; retrying in %.2f s (%d queued, %d dropped)",
                    self.label,
                    "lost connection to" if self._had_connection else "cannot connect to",
                    self.host,
                    self.port,
                    _describe(exc),
                    wait,
                    len(self._outbox),
                    self.dropped,
                    exc_info=exc if unexpected else None,
                )
                quiet = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), wait)
            delay = min(delay * 2, self.backoff_max)

    def _new_client(self) -> aiomqtt.Client:
        will = self._status_doc("offline", time.time(), {"reason": "connection lost"})
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            will=aiomqtt.Will(self.status_topic, will, qos=1, retain=True),
            clean_session=True,
            keepalive=KEEPALIVE,
            timeout=self.ack_timeout,
            max_inflight_messages=max(20, self.max_inflight),
            # Small packets where latency matters: send each at once (no Nagle).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        client.pending_calls_threshold = self.max_inflight + 2  # it warns above this many
        return client

    # -- one connection ---------------------------------------------------------------------

    async def _session(self, client: aiomqtt.Client) -> None:
        """Connect, announce, drain until stopped (returns) or until the connection fails."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(client)
            except BaseException:
                _abandon(client)
                raise
            self._had_connection = True
            self.connections += 1
            try:
                await self._serve(client)
            finally:
                self.connected = False

    async def _serve(self, client: aiomqtt.Client) -> None:
        # aiomqtt does not watch the connection while we wait for a PUBACK (it would only time
        # out); its message iterator, though, raises as soon as the connection drops.
        watch = asyncio.create_task(self._watch(client), name=f"mqtt-watch:{self.label}")
        pump = asyncio.create_task(self._pump(client), name=f"mqtt-pump:{self.label}")
        held = asyncio.create_task(self._held.wait(), name=f"mqtt-held:{self.label}")
        tasks = (watch, pump, held)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Cancelled from outside (stop() ran out of time): say offline without waiting.
            with contextlib.suppress(Exception):
                offline = self._status_doc("offline", time.time(), {"reason": "stopped"})
                await client.publish(self.status_topic, offline, qos=0, retain=True)
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        if held.done() and not held.cancelled() and not self._stopping:
            log.info("mqtt %s: held: disconnecting, status left as it is", self.label)
            return
        errors = [t.exception() for t in tasks if not t.cancelled() and t.exception()]
        if errors:
            raise errors[0]
        # The pump returned: stopping, and the outbox is flushed.
        offline = self._status_doc("offline", time.time(), {"reason": "stopped"})
        await client.publish(self.status_topic, offline, qos=1, retain=True)
        self._status = "offline"
        log.info("mqtt %s: stopped, status offline published", self.label)

    async def _watch(self, client: aiomqtt.Client) -> None:
        try:
            # Only the `reap` filter is subscribed to, if any: retained leftovers to clear.
            async for message in client.messages:
                self._on_message(message)
        except aiomqtt.MqttError as exc:
            raise aiomqtt.MqttError(f"connection lost: {exc.__cause__ or exc}") from None

    def _on_message(self, message: aiomqtt.Message) -> None:
        """A retained document under `reap` that this publisher does not hold is a leftover of
        an earlier run (which stopped before it could clear it): clear it."""
        topic = message.topic.value
        if not message.retain or not message.payload or topic in self._retained:
            return  # live messages (our own, echoed back) and empty ones are not leftovers
        if self.reap is None or not message.topic.matches(self.reap):
            return
        log.info("mqtt %s: clearing the retained leftover %s", self.label, topic)
        self.set_retained(topic, None)

    async def _pump(self, client: aiomqtt.Client) -> None:
        await self._send_status(client)
        # Every held document again: the broker may have lost it (a crash, no persistence).
        for topic in self._retained:
            self._retained_dirty.setdefault(topic, None)
        if self.reap is not None:
            await client.subscribe(self.reap, qos=1)
        self.connected = True
        log.info(
            "mqtt %s: connected to %s:%d as %s (%d queued)",
            self.label,
            self.host,
            self.port,
            self.client_id,
            len(self._outbox),
        )
        # A sliding window of QoS 1 publishes: with acknowledgements trickling back while new
        # PUBLISHes go out, 16 in flight gave ~14k events/s on loopback where one at a time gave
        # ~5k (and waiting for a whole batch to be acked before the next, ~0.5k: mosquitto's
        # Nagle holds PUBACKs for delayed ACKs). Events go to paho directly, their PUBACKs
        # counted in its on_publish callback: aiomqtt's publish() is a coroutine awaiting each
        # PUBACK (an Event, a wait_for and, to overlap them, a task per event), which made up
        # half of the CPU a rack's boot events cost; aiomqtt has no call that does not wait.
        # Status and retained documents, rare, still go through aiomqtt's publish().
        paho = client._client
        inflight: dict[int, tuple[tuple[str, bytes], float]] = {}  # mid -> item, when sent
        failures: list[BaseException] = []
        loop = asyncio.get_running_loop()
        chained = paho.on_publish  # aiomqtt's, which settles its own publish() calls

        def on_publish(*args: Any) -> None:  # (client, userdata, mid, reason, properties)
            chained(*args)
            if inflight.pop(args[2], None) is not None:
                self.published += 1
                self._counts["published"] = self._counts.get("published", 0) + 1
                self._wakeup.set()

        # One watchdog for the window instead of a PUBACK timeout per publish.
        def watch() -> None:
            nonlocal watchdog
            oldest = next(iter(inflight.values()), None)  # of the publishes not acked yet
            if oldest is not None and loop.time() - oldest[1] > self.ack_timeout and not failures:
                failures.append(aiomqtt.MqttError(f"no PUBACK within {self.ack_timeout:g} s"))
                self._wakeup.set()
            watchdog = loop.call_later(self.ack_timeout / 5, watch)

        watchdog = loop.call_later(self.ack_timeout / 5, watch)
        paho.on_publish = on_publish
        try:
            while not failures:
                if self._status_dirty:
                    await self._send_status(client)
                elif self._retained_dirty:
                    await self._send_retained(client)
                elif self._outbox and len(inflight) < self.max_inflight:
                    topic, payload = item = self._outbox.popleft()
                    info = paho.publish(topic, payload, qos=1)
                    if info.rc != MQTT_ERR_SUCCESS:
                        self._outbox.appendleft(item)
                        raise aiomqtt.MqttCodeError(info.rc, "could not publish")
                    inflight[info.mid] = (item, loop.time())
                elif self._stopping and not self._outbox and not inflight:
                    return  # flushed
                else:
                    self._wakeup.clear()
                    await self._wakeup.wait()
            raise failures[0]
        finally:
            watchdog.cancel()
            paho.on_publish = chained
            # Whatever has no PUBACK yet goes back to the head of the outbox (if one is acked
            # after all, it will be sent twice: at least once).
            self._requeue([item for item, _ in inflight.values()])
            inflight.clear()

    async def _send_status(self, client: aiomqtt.Client) -> None:
        self._status_dirty = False
        assert self._status_time is not None
        doc = self._status_doc(self._status, self._status_time, self._details)
        try:
            await client.publish(self.status_topic, doc, qos=1, retain=True)
        except BaseException:
            self._status_dirty = True
            raise

    async def _send_retained(self, client: aiomqtt.Client) -> None:
        topic = next(iter(self._retained_dirty))
        del self._retained_dirty[topic]
        payload = self._retained[topic]
        try:
            await client.publish(topic, payload or b"", qos=1, retain=True)
        except BaseException:
            self._retained_dirty.setdefault(topic, None)
            raise
        if topic not in self._retained_dirty and self._retained.get(topic, b"") is None:
            del self._retained[topic]  # cleared on the broker: nothing left to hold

    def _requeue(self, items: list[tuple[str, bytes]]) -> None:
        """Put unacknowledged events back at the head, still within the bound (oldest go)."""
        if not items:
            return
        self._outbox.extendleft(reversed(items))
        excess = len(self._outbox) - self.outbox_size
        for _ in range(max(0, excess)):
            self._outbox.popleft()
        if excess > 0:
            self._count_drop(excess, f"outbox full ({self.outbox_size}) on requeue")


def _abandon(client: aiomqtt.Client) -> None:
    """Close the socket of a connection attempt that failed after the TCP connect.

    When the CONNACK does not come in time (or the attempt is cancelled), aiomqtt gives up but
    leaves paho's socket open and registered with the event loop: a zombie connection that may
    still complete later, will included. aiomqtt has no public call for this; paho's own
    `_sock_close()` closes the socket and unregisters it (through aiomqtt's callbacks).
    """
    paho = getattr(client, "_client", None)
    close = getattr(paho, "_sock_close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


async def _first(*waits: Awaitable[Any]) -> None:
    """Return when the first of `waits` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _leaf(exc)
    text = str(exc) or type(exc).__name__
    cause = str(exc.__cause__ or "")
    return f"{text} ({cause})" if cause and cause not in text else text
