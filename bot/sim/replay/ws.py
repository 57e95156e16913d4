"""The replay exchange's websocket sessions: subscribe/unsubscribe, ping/pong, broadcast and drops."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from bot.sim.replay.faults import FaultPlan


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


class WsSessions:
    """Every websocket the exchange accepted (`connections`, open or closed) and the topics it serves.

    Args:
        faults: consulted once per accepted websocket for a drop stage.
    """

    def __init__(self, faults: FaultPlan) -> None:
        self._faults = faults
        self.connections: list[ReplayConnection] = []
        self._topics: dict[str, str] = {}  # subscribable topic -> its symbol
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

    # ---- pushes -----------------------------------------------------------------------------------------

    async def broadcast(self, topic: str, frame: bytes) -> None:
        """Send `frame` to every open, non-silent websocket subscribed to `topic`."""
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
        """Send one text frame; a connection that fails is marked closed."""
        try:
            await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            conn.closed = True

    # ---- faults and shutdown ----------------------------------------------------------------------------

    async def drop(self, conn: ReplayConnection, *, abort: bool) -> None:
        """Drop one websocket: a TCP reset without a close frame (abort) or a 1001 close."""
        conn.closed = True
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
                conn.closed = True
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
            conn.closed = True
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
                reply = {
                    "success": True,
                    "ret_msg": "pong",
                    "conn_id": conn.conn_id,
                    "req_id": req_id,
                    "op": "ping",
                }
                await self.send(conn, json.dumps(reply))
            return False
        if op in ("subscribe", "unsubscribe"):
            conn.subscribe_requests += op == "subscribe"
            if drop_on_subscribe and op == "subscribe":
                await self.drop(conn, abort=True)
                return True
            args = req.get("args")
            topics = [a for a in args if isinstance(a, str)] if isinstance(args, list) else []
            error = self._apply(conn, op, topics)
            reply = {
                "success": not error,
                "ret_msg": error,
                "conn_id": conn.conn_id,
                "req_id": req_id,
                "op": op,
            }
            await self.send(conn, json.dumps(reply))
        return False

    def _apply(self, conn: ReplayConnection, op: str, topics: list[str]) -> str:
        """(Un)subscribe `conn` to `topics`; return the first error ("" = none), as Bybit words it."""
        error = ""
        for topic in topics:
            if topic not in self._topics:
                error = error or f"error:handler not found,topic:{topic}"
            elif op == "subscribe" and topic in conn.topics:
                error = error or f"error:already subscribed,topic:{topic}"
            elif op == "subscribe":
                conn.topics.add(topic)
            else:
                conn.topics.discard(topic)
        return error
