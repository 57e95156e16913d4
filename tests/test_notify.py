"""sd_notify client and gated watchdog against a real Unix datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Config, parse_config, watchdog_fresh_s
from bot.observe.notify import Notifier, Watchdog


class FakeSystemd:
    """A bound AF_UNIX datagram socket: what systemd listens on for sd_notify."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def recv(self) -> list[str]:
        """The next datagram, split into its KEY=VALUE lines."""
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> list[list[str]]:
        """Every datagram already queued, without waiting."""
        out: list[list[str]] = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return out


@pytest.fixture
def systemd_path(tmp_path: Path) -> Iterator[tuple[FakeSystemd, str]]:
    path = str(tmp_path / "notify.sock")
    fake = FakeSystemd(path)
    yield fake, path
    fake.sock.close()


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_ready_status_stopping_reach_the_socket(systemd_path: tuple[FakeSystemd, str]) -> None:
    """READY=1 (with STATUS), STATUS and STOPPING=1 arrive as the datagrams systemd expects."""
    fake, path = systemd_path
    n = Notifier(path)
    assert n.ready(status="backfilled 300 bars, subscribed")
    assert fake.recv() == ["READY=1", "STATUS=backfilled 300 bars, subscribed"]
    assert n.status("bar 1735689600000 decided\nby edge")
    assert fake.recv() == ["STATUS=bar 1735689600000 decided by edge"]
    assert n.stopping()
    assert fake.recv() == ["STOPPING=1"]
    assert n.extend_timeout(1.5)
    assert fake.recv() == ["EXTEND_TIMEOUT_USEC=1500000"]
    assert (n.sent, n.failed) == (4, 0)
    n.close()


def test_abstract_socket_name() -> None:
    """NOTIFY_SOCKET='@name' is an abstract-namespace socket, as systemd may pass."""
    name = f"progdistill-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": f"@{name}"})
        assert n.ready()
        assert fake.recv() == ["READY=1"]
        n.close()
    finally:
        fake.sock.close()


def test_noop_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET every call is a no-op returning False and there is no watchdog."""
    n = Notifier.from_env({})
    assert not n.enabled
    assert (n.ready(), n.watchdog(), n.stopping()) == (False, False, False)
    assert n.watchdog_interval_s is None
    assert n.sent == 0


def test_watchdog_interval_from_env(systemd_path: tuple[FakeSystemd, str]) -> None:
    """WATCHDOG_USEC=60s pings every 30 s; WATCHDOG_PID of another process disables it."""
    _, path = systemd_path
    mine = Notifier.from_env(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval_s == 30.0
    other = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None
    with pytest.raises(ValueError, match="WATCHDOG_USEC must be an integer, got 'soon'"):
        Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"})
    with pytest.raises(ValueError, match="absolute path or '@name'"):
        Notifier("relative.sock")


def test_send_failure_does_not_raise(tmp_path: Path) -> None:
    """A vanished notify socket makes notify() return False and count the failure, never raise."""
    n = Notifier(str(tmp_path / "gone.sock"))
    assert not n.ready()
    assert (n.failed, n.sent) == (1, 0)


def test_watchdog_pings_only_while_fresh(systemd_path: tuple[FakeSystemd, str]) -> None:
    """WATCHDOG=1 is sent while the last bar is younger than fresh_s and withheld once it is older."""
    fake, path = systemd_path
    clock = Clock()
    wd = Watchdog(Notifier(path, watchdog_usec=60_000_000), fresh_s=420.0, clock=clock)
    assert wd.tick()  # start-up counts as fresh
    assert fake.recv() == ["WATCHDOG=1"]
    clock.now_s += 419.0
    assert wd.tick()
    assert fake.recv() == ["WATCHDOG=1"]
    clock.now_s += 2.0  # 421 s without a bar: stale
    assert not wd.is_fresh()
    assert not wd.tick()
    assert fake.pending() == []
    wd.mark_fresh()  # a bar arrives (e.g. REST backfill after reconnect)
    assert wd.age_s() == 0.0
    assert wd.tick()
    assert fake.recv() == ["WATCHDOG=1"]
    assert (wd.pings, wd.withheld) == (3, 1)
    wd.notifier.close()


async def test_watchdog_run_stops_pinging_when_feed_goes_stale(systemd_path: tuple[FakeSystemd, str]) -> None:
    """The run loop pings at its cadence while bars arrive and goes silent after the freshness window."""
    fake, path = systemd_path
    wd = Watchdog(Notifier(path), fresh_s=0.3)
    task = asyncio.create_task(wd.run(interval_s=0.02))
    try:
        for _ in range(10):  # bars every 50 ms for 0.5 s: fresh throughout
            wd.mark_fresh()
            await asyncio.sleep(0.05)
        fresh = fake.pending()
        await asyncio.sleep(0.5)  # no bars: stale after 0.3 s
        fake.pending()
        await asyncio.sleep(0.2)
        assert fake.pending() == []  # silent now
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        wd.notifier.close()
    assert len(fresh) >= 10
    assert all(msg == ["WATCHDOG=1"] for msg in fresh)
    assert wd.withheld > 0


async def test_watchdog_run_returns_without_systemd_watchdog() -> None:
    """Without WATCHDOG_USEC the run loop returns at once (nothing to ping)."""
    wd = Watchdog(Notifier(None), fresh_s=1.0)
    await asyncio.wait_for(wd.run(), timeout=1.0)
    assert wd.pings == 0


def test_fresh_window_is_bar_length_plus_grace() -> None:
    """The freshness window is one bar plus service.watchdog_grace_s (5m bars: 300 + 120 s)."""
    assert watchdog_fresh_s(Config()) == 420.0
    cfg = parse_config({"market": {"interval": "1"}, "service": {"watchdog_grace_s": 30.0}})
    assert watchdog_fresh_s(cfg) == 90.0
