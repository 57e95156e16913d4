"""The event names the exchange edge logs (the feed, its connections, the REST client), and its logger.

The edge owns them so that it imports nothing of the service; `bot.observe.logs`, the one logging setup,
re-exports them with every other event name.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

BAR_SKIPPED: Final = "bar_skipped"
BAR_DUPLICATE: Final = "bar_duplicate_dropped"
BAR_LATE: Final = "bar_late_dropped"
BACKFILL: Final = "backfill"
BACKFILL_PAGE: Final = "backfill_page"
BACKFILL_FAILED: Final = "backfill_failed"
BACKFILL_PROGRESS: Final = "backfill_progress"  # start-up backfill: symbols done of total, every ~2 s
SYMBOL_EXCLUDED: Final = "symbol_excluded"  # a symbol's start-up backfill failed every try: left out
WS_PLANNED: Final = "ws_planned"  # the topics spread over websocket connections
WS_CONNECTED: Final = "ws_connected"
WS_SUBSCRIBED: Final = "ws_subscribed"
WS_RECONNECT: Final = "ws_reconnect"
WS_STALE: Final = "ws_stale_feed"
WS_BAD_FRAME: Final = "ws_bad_frame"
WS_UNKNOWN_TOPIC: Final = "ws_unknown_topic"
REST_RETRY: Final = "rest_retry"
REST_BANNED: Final = "rest_banned"


def get_logger(**context: Any) -> Any:
    """A structlog logger with `context` bound (e.g. `symbol=...`); `bot.observe.logs` configures it."""
    return structlog.get_logger().bind(**context)
