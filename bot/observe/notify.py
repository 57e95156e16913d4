"""sd_notify client and the freshness-gated watchdog.

systemd passes `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) to a `Type=notify` service
and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`). `Notifier` sends the datagrams
(`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`); without `NOTIFY_SOCKET` every call is a no-op,
so the same code runs in a terminal, in tests and under systemd.

`Watchdog` decides whether to ping: only while bars are fresh, i.e. the last confirmed bar was seen
less than `fresh_s` ago on `time.monotonic`. A stale feed therefore stops the pings and systemd restarts
the service `WatchdogSec` after the last one; a blocked event loop stops them at once.

Wiring in the app (a few lines)::

    notifier = Notifier.from_env()
    watchdog = Watchdog(notifier, fresh_s=watchdog_fresh_s(cfg))
    tg.create_task(watchdog.run())          # returns at once when systemd set no watchdog
    ...                                     # after backfill + subscribe (FeedReady):
    notifier.ready(status="trading BTCUSDT")
    ...                                     # on every confirmed Bar:
    watchdog.mark_fresh()
    ...                                     # on SIGTERM:
    notifier.stopping()
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

# systemd kills WatchdogSec after the last ping; ping twice per period (sd_watchdog_enabled(3)).
PINGS_PER_PERIOD: Final = 2


def _address(notify_socket: str) -> str | bytes:
    """Socket address for `NOTIFY_SOCKET`: '@name' is the abstract name '\\0name'."""
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    return notify_socket


class Notifier:
    """Datagram client for the systemd notify socket.

    Args:
        notify_socket: the `NOTIFY_SOCKET` value (filesystem path or `@abstract`); None = disabled (no-op).
        watchdog_usec: the `WATCHDOG_USEC` value in microseconds; None = systemd set no watchdog.
    """

    def __init__(self, notify_socket: str | None, *, watchdog_usec: int | None = None) -> None:
        if notify_socket is not None and not (
            notify_socket.startswith(("/", "@")) and len(notify_socket) > 1
        ):
            raise ValueError(f"NOTIFY_SOCKET must be an absolute path or '@name', got {notify_socket!r}")
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise ValueError(f"WATCHDOG_USEC must be a positive number of microseconds, got {watchdog_usec}")
        self.notify_socket = notify_socket
        self.watchdog_usec = watchdog_usec
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (default: os.environ).

        The watchdog is ignored when `WATCHDOG_PID` names another process, as sd_watchdog_enabled(3) does.
        """
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw_usec = env.get("WATCHDOG_USEC")
        if raw_usec:
            try:
                usec = int(raw_usec)
            except ValueError:
                raise ValueError(f"WATCHDOG_USEC must be an integer, got {raw_usec!r}") from None
            raw_pid = env.get("WATCHDOG_PID")
            if raw_pid and raw_pid.isdigit() and int(raw_pid) != os.getpid():
                usec = None
        return cls(path, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """True when a notify socket is set (running under systemd `Type=notify`)."""
        return self.notify_socket is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is set."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 1e6 / PINGS_PER_PERIOD

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines in one datagram; True if sent, False if disabled or the send failed.

        A failed send never raises: the service keeps running and systemd's own timeouts take over.
        """
        if self.notify_socket is None:
            return False
        for line in assignments:
            if "=" not in line or "\n" in line:
                raise ValueError(f"sd_notify assignments are single 'KEY=VALUE' lines, got {line!r}")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                try:
                    sock.connect(_address(self.notify_socket))
                except OSError:
                    sock.close()
                    raise
                self._sock = sock
            self._sock.send("\n".join(assignments).encode())
        except OSError:
            self.failed += 1
            self.close()
            return False
        self.sent += 1
        return True

    def ready(self, *, status: str | None = None) -> bool:
        """READY=1: start-up finished (after backfill and subscribe)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, *, status: str | None = None) -> bool:
        """STOPPING=1: graceful shutdown began."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the service is alive and its feed is fresh."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """STATUS=...: free text shown by `systemctl status` (one line)."""
        return self.notify(f"STATUS={text.replace(chr(10), ' ')}")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC=...: ask for more start/stop time (e.g. a long backfill)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1e6))}")

    def close(self) -> None:
        """Close the socket (the next notify reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Pings systemd's watchdog only while bars are fresh.

    Args:
        notifier: where WATCHDOG=1 goes.
        fresh_s: bars are fresh while the last `mark_fresh()` was less than this many seconds ago
            (see `bot.config.watchdog_fresh_s`). Start-up counts as fresh, so the first window begins
            at construction.
        clock: monotonic seconds (injectable for tests); never the wall clock.
        healthy: a further gate (the service passes "no symbol's decisions are lagging").
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        fresh_s: float,
        clock: Callable[[], float] = time.monotonic,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        if fresh_s <= 0:
            raise ValueError(f"fresh_s must be a positive number of seconds, got {fresh_s}")
        self.notifier = notifier
        self.fresh_s = fresh_s
        self._clock = clock
        self._last_fresh_s = clock()
        self._healthy = healthy
        self.pings = 0
        self.withheld = 0

    def mark_fresh(self) -> None:
        """Record that the pipeline just decided (or, during warm-up, absorbed) a confirmed bar."""
        self._last_fresh_s = self._clock()

    @property
    def last_fresh_s(self) -> float:
        """Monotonic time of the last `mark_fresh()` (or of construction)."""
        return self._last_fresh_s

    def age_s(self) -> float:
        """Seconds since the last confirmed bar (or since construction)."""
        return self._clock() - self._last_fresh_s

    def is_fresh(self) -> bool:
        """True while the last decided bar is younger than `fresh_s` and `healthy()` (no symbol lagging)."""
        return self.age_s() < self.fresh_s and self._healthy()

    def tick(self) -> bool:
        """Ping if fresh; True when WATCHDOG=1 was sent."""
        if not self.is_fresh():
            self.withheld += 1
            return False
        sent = self.notifier.watchdog()
        self.pings += sent
        return sent

    async def run(self, *, interval_s: float | None = None) -> None:
        """Tick every `interval_s` (default: the notifier's WATCHDOG_USEC/2) until cancelled.

        Returns at once when there is no interval (systemd set no watchdog). Runs on the event loop on
        purpose: a blocked loop must stop the pings.
        """
        period = interval_s if interval_s is not None else self.notifier.watchdog_interval_s
        if period is None:
            return
        if period <= 0:
            raise ValueError(f"interval_s must be a positive number of seconds, got {period}")
        while True:
            self.tick()
            await asyncio.sleep(period)
