"""The project's one error root and its short tree."""

from __future__ import annotations


class BotError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(BotError):
    """A config file is missing, malformed or out of range; the message names file and key path."""


class DataError(BotError):
    """Input market data is malformed (bad CSV row, gap, non-monotone time); the message names the row."""


class ModelError(BotError):
    """A model file or manifest is missing, altered, or does not match the feature schema."""


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


class PipelineStalledError(BotError):
    """Closed bars keep arriving but none is decided (`bot.core.liveness`); the service exits to restart."""


class SubscribeError(ExchangeError):
    """A websocket subscribe was refused (e.g. unknown symbol); fatal for the service."""
