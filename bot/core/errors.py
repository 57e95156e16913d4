"""The project's one error root and the domain errors of the core; the exchange's errors are in
`bot.bybit.errors`, the tree is in docs/architecture.md."""

from __future__ import annotations


class BotError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(BotError):
    """A config file is missing, malformed or out of range; the message names file and key path."""


class DataError(BotError):
    """Input market data is malformed (bad CSV row, gap, non-monotone time); the message names the row."""


class ModelError(BotError):
    """A model file or manifest is missing, altered, or does not match the feature schema."""


class PipelineStalledError(BotError):
    """Closed bars keep arriving but none is decided (`bot.core.liveness`); the service exits to restart."""
