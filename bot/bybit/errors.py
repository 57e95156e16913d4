"""The exchange edge's errors, under the one root `bot.core.errors.BotError`.

`ExchangeError` and its children are what the exchange refused or a fault that outlasted its retries;
`WireError` is a frame or response that does not match the documented Bybit v5 shape. docs/architecture.md
shows the whole tree.
"""

from __future__ import annotations

from bot.core.errors import BotError


class ExchangeError(BotError):
    """The exchange answered with an error we cannot recover from (ban, bad symbol, bad params)."""


class EndpointError(ExchangeError):
    """The exchange cannot be reached for a reason retrying will not fix (unknown host, TLS failure, HTTP 4xx
    on the websocket handshake); the message names the URL and the cause."""


class RetriesExhaustedError(ExchangeError):
    """A transient fault (timeout, connection error, HTTP 5xx, rate limit) outlasted every retry."""


class RateLimitError(RetriesExhaustedError):
    """Bybit retCode 10006 outlasted every retry; `reset_ms` is the exchange's reset timestamp if sent."""

    def __init__(self, message: str, *, reset_ms: int | None = None) -> None:
        super().__init__(message)
        self.reset_ms = reset_ms


class IpBannedError(ExchangeError):
    """HTTP 403 from Bybit: the IP is banned for at least 10 minutes; REST must stop."""


class SubscribeError(ExchangeError):
    """A websocket subscribe was refused (e.g. unknown symbol); fatal for the service."""


class WireError(BotError):
    """A frame or response does not match the documented Bybit v5 shape."""
