"""The replay exchange's websocket sessions: subscribe/unsubscribe, ping/pong, broadcast and drops.

Subscribing answers like Bybit's public linear stream: one success frame when every topic of the request is
accepted, else one failure frame per rejected topic and nothing of that request subscribed. The `args` of
one connection may not exceed `ARGS_LIMIT_CHARS` characters (Bybit's 21,000, counted as the JSON array of
every topic the connection would then hold): a request past it is refused with one failure frame whose
`ret_msg` names the limit (`args length >21000`, worded like Bybit's per-request `args size >10`, the one
such refusal seen in the wild: pybit, rust-bybit#24, nautilus_trader#1793) and nothing of it subscribed.
A topic with a snapshot (orderbook, tickers) gets it on the subscribing connection right after the ack.

With `latency_ms > 0` every frame the exchange sends (acks, pongs, pushes) leaves `latency_ms` after it was
produced, in order, through a per-connection queue: a real network never answers within microseconds, and
clients such as pybit record a request only after sending it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from bot.sim.replay.faults import FaultPlan
from bot.sim.replay.frames import op_reply

ARGS_LIMIT_CHARS = 21_000


def args_chars(topics: list[str] | set[str]) -> int:
    """Characters of `topics` as one JSON array (`["a","b"]`), as the args limit counts them."""
    return len(json.dumps(sorted(topics), separators=(",", ":")))


# A topic's snapshot for a new subscriber (None = the topic has none).
SnapshotFn = Callable[[str], bytes | None]


@dataclass(eq=False)
class ReplayConnection:
    """One accepted websocket, as the exchange saw it (kept after it closes, for tests)."""

    conn_id: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    topics: set[str] = field(default_factory=set)
    subscribe_requests: int = 0
    pings: int = 0
    silent: bool = False
    answer_pings: bool = True
    closed: bool = False
    outbox: asyncio.Queue[tuple[float, str]] | None = None
    sender: asyncio.Task[None] | None = None
    released: bool = False


class WsSessions:
    """Every websocket the exchange accepted (`connections`, open or closed) and the topics it serves.

    Args:
        faults: consulted once per accepted websocket for a drop stage.
        latency_ms: delay of every frame sent (0 = sent at once).
        snapshot: the snapshot of a topic for a new subscriber (None = none).
    """

    def __init__(
        self, faults: FaultPlan, *, latency_ms: float = 0.0, snapshot: SnapshotFn | None = None
    ) -> None:
        self._faults = faults
        self.latency_ms = latency_ms
        self._snapshot = snapshot
        self.connections: list[ReplayConnection] = []
        self._topics: dict[str, str] = {}  # subscribable topic -> its symbol
        self._subscribers: dict[str, int] = {}  # topic -> open connections subscribed
        self._conn_ids = itertools.count(1)

    def serve(self, symbol: str, *topics: str) -> None:
        """Make `topics` (of `symbol`) subscribable."""
        for topic in topics:
            self._topics[topic] = symbol

    def delist(self, symbol: str) -> None:
        """Forget `symbol`'s topics: subscribing answers `handler not found`."""
        for topic in [t for t, sym in self._topics.items() if sym == symbol]:
            del self._topics[topic]

    @property
    def open_connections(self) -> list[ReplayConnection]:
        """Websockets currently open."""
        return [c for c in self.connections if not c.closed]

    def subscribers(self, topic: str) -> int:
        """Open connections subscribed to `topic`."""
        return self._subscribers.get(topic, 0)

    def wanted(self, topic: str) -> bool:
        """Whether an open connection is subscribed to `topic` (else its push need not be built)."""
        return self._subscribers.get(topic, 0) > 0

    def _closed(self, conn: ReplayConnection) -> None:
        """Mark `conn` closed (its `topics` stay, for tests) and stop counting it as a subscriber."""
        conn.closed = True
        if conn.released:
            return
        conn.released = True
        for topic in conn.topics:
            self._subscribers[topic] = self._subscribers.get(topic, 1) - 1
        if conn.sender is not None:
            conn.sender.cancel()

    # ---- pushes -----------------------------------------------------------------------------------------

    async def broadcast(self, topic: str, frame: bytes) -> None:
        """Send `frame` to every open, non-silent websocket subscribed to `topic`."""
        if not self.wanted(topic):
            return
        text = frame.decode()
        for conn in self.connections:
            if not conn.closed and not conn.silent and topic in conn.topics:
                await self.send(conn, text)

    async def inject(self, frame: str) -> None:
        """Send a raw text frame to every open, non-silent websocket."""
        for conn in self.open_connections:
            if not conn.silent:
                await self.send(conn, frame)

    async def send(self, conn: ReplayConnection, text: str) -> None:
        """Send one text frame (after the latency); a connection that fails is marked closed."""
        if conn.closed:
            return
        if self.latency_ms <= 0:
            await self._write(conn, text)
            return
        loop = asyncio.get_running_loop()
        if conn.outbox is None:
            conn.outbox = asyncio.Queue()
            conn.sender = asyncio.create_task(self._deliver(conn, conn.outbox), name=f"{conn.conn_id}-send")
        conn.outbox.put_nowait((loop.time() + self.latency_ms / 1000, text))

    async def _write(self, conn: ReplayConnection, text: str) -> None:
        try:
            await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self._closed(conn)

    async def _deliver(self, conn: ReplayConnection, outbox: asyncio.Queue[tuple[float, str]]) -> None:
        loop = asyncio.get_running_loop()
        while not conn.closed:
            due, text = await outbox.get()
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not conn.closed:
                await self._write(conn, text)

    # ---- faults and shutdown ----------------------------------------------------------------------------

    async def drop(self, conn: ReplayConnection, *, abort: bool) -> None:
        """Drop one websocket: a TCP reset without a close frame (abort) or a 1001 close."""
        self._closed(conn)
        if abort and conn.transport is not None:
            conn.transport.abort()
        else:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"replay drop")

    def silence(self, *, answer_pings: bool) -> None:
        """Open websockets stay open but get no more pushes; pings are answered or not."""
        for conn in self.open_connections:
            conn.silent = True
            conn.answer_pings = answer_pings

    async def close_all(self) -> None:
        """Close every open websocket (server shutdown)."""
        for conn in self.connections:
            if not conn.closed:
                self._closed(conn)
                with contextlib.suppress(Exception):
                    await conn.ws.close()

    # ---- the handler ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler of the websocket path: accept (or drop per the fault plan), then serve frames."""
        stage = self._faults.take_drop_stage()
        if stage == "handshake":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503, text="dropped during handshake")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        transport = request.transport if isinstance(request.transport, asyncio.Transport) else None
        conn = ReplayConnection(conn_id=f"replay-{next(self._conn_ids)}", ws=ws, transport=transport)
        self.connections.append(conn)
        if stage == "open":
            await self.drop(conn, abort=True)
            return ws
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if await self._on_client_frame(conn, msg.data, drop_on_subscribe=stage == "subscribe"):
                    break
        finally:
            self._closed(conn)
        return ws

    async def _on_client_frame(self, conn: ReplayConnection, text: str, *, drop_on_subscribe: bool) -> bool:
        """Handle one client frame; True = the connection was dropped."""
        try:
            req = json.loads(text)
        except ValueError:
            return False
        if not isinstance(req, dict):
            return False
        op = req.get("op")
        req_id = str(req.get("req_id", ""))
        if op == "ping":
            conn.pings += 1
            if conn.answer_pings:
                reply = op_reply(success=True, ret_msg="pong", conn_id=conn.conn_id, req_id=req_id, op="ping")
                await self.send(conn, reply)
            return False
        if op in ("subscribe", "unsubscribe"):
            conn.subscribe_requests += op == "subscribe"
            if drop_on_subscribe and op == "subscribe":
                await self.drop(conn, abort=True)
                return True
            args = req.get("args")
            topics = [a for a in args if isinstance(a, str)] if isinstance(args, list) else []
            errors = self._apply(conn, op, topics)
            for error in errors or [""]:
                reply = op_reply(success=not error, ret_msg=error, conn_id=conn.conn_id, req_id=req_id, op=op)
                await self.send(conn, reply)
            if op == "subscribe" and not errors and self._snapshot is not None:
                for topic in topics:
                    frame = self._snapshot(topic)
                    if frame is not None:
                        await self.send(conn, frame.decode())
        return False

    def _apply(self, conn: ReplayConnection, op: str, topics: list[str]) -> list[str]:
        """(Un)subscribe `conn` to every topic of one request, or to none: the errors, one per rejected topic,
        worded as Bybit does."""
        errors: list[str] = []
        if not topics:
            errors.append(f"error:args invalid,op:{op}")
        elif op == "subscribe" and args_chars(conn.topics | set(topics)) > ARGS_LIMIT_CHARS:
            return [f"args length >{ARGS_LIMIT_CHARS}"]
        for topic in topics:
            if topic not in self._topics:
                errors.append(f"error:handler not found,topic:{topic}")
            elif op == "subscribe" and topic in conn.topics:
                errors.append(f"error:already subscribed,topic:{topic}")
        if errors or conn.closed:
            return errors
        for topic in dict.fromkeys(topics):
            if op == "subscribe":
                conn.topics.add(topic)
                self._subscribers[topic] = self._subscribers.get(topic, 0) + 1
            elif topic in conn.topics:
                conn.topics.discard(topic)
                self._subscribers[topic] = self._subscribers.get(topic, 1) - 1
        return errors
