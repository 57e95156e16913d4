"""Where offline work runs: in this process, or as Ray tasks (a local Ray by default, `--address` for a
cluster), the way `offline sweep` runs its trials.

`fan_out(spec)` gives a `Runner`. `Runner.share(value)` hands back the value the tasks will read: in process
the value itself; on Ray it is put in the object store once, and the driver then reads the store's copy
(numpy arrays are mapped, not copied), so a dataset is held once on the machine however many tasks read
it. `Runner.map(fn, shared, jobs)` calls `fn(shared, *job)` for every job and returns the results in the
order of `jobs`; `on_result` sees each as it is collected (in that order).

Ray is an optional extra (`pip install 'progdistill[ray]'`): without it, `spec.address` is a ConfigError and
a local run falls back to this process, saying so once through `log`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.core.errors import ConfigError
from offline import interrupts

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class FanOut:
    """Where to run: `ray` False runs in this process; else a local Ray with `num_cpus` (None = all) or
    the cluster at `address` (`auto` or HOST:PORT)."""

    ray: bool = True
    address: str | None = None
    num_cpus: int | None = None

    def check(self) -> None:
        """Raise ConfigError for options that contradict each other or are out of range."""
        if not self.ray and (self.address is not None or self.num_cpus is not None):
            flag = "--address" if self.address is not None else "--num-cpus"
            raise ConfigError(f"{flag}: not with --no-ray (which runs every task in this process)")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"--num-cpus: expected at least 1 CPU, got {self.num_cpus}")


class Runner:
    """Runs the jobs of one fan-out; see the module docstring."""

    def __init__(self, ray: Any | None) -> None:
        self._ray = ray
        self._ref: Any = None
        self._shared: Any = None
        self._remote: dict[Callable[..., Any], Any] = {}

    @property
    def where(self) -> str:
        """ "ray (N CPUs)" or "in process", for the log."""
        if self._ray is None:
            return "in process"
        return f"ray ({int(self._ray.cluster_resources().get('CPU', 1))} CPUs)"

    def share(self, value: T) -> T:
        """The value the tasks read (see the module docstring); call once, before `map`."""
        if self._ray is None:
            self._ref = self._shared = value
            return value
        self._ref = self._ray.put(value)
        shared: T = self._ray.get(self._ref)
        self._shared = shared
        return shared

    def shares(self, value: object) -> bool:
        """True when `value` is what `share` returned (the tasks read it)."""
        return self._shared is not None and self._shared is value

    def map(
        self,
        fn: Callable[..., R],
        jobs: Sequence[tuple[Any, ...]],
        *,
        on_result: Callable[[tuple[Any, ...], R], None] | None = None,
    ) -> list[R]:
        """`fn(shared, *job)` for every job, results in the order of `jobs`.

        Raises:
            RuntimeError: nothing was shared yet.
        """
        if self._shared is None:
            raise RuntimeError("Runner.map: call share(value) first")
        out: list[R] = []
        if self._ray is None:
            for job in jobs:
                out.append(fn(self._ref, *job))
                if on_result is not None:
                    on_result(job, out[-1])
            return out
        task = self._remote.setdefault(fn, self._ray.remote(fn))
        refs = [task.remote(self._ref, *job) for job in jobs]
        for job, ref in zip(jobs, refs, strict=True):
            out.append(self._ray.get(ref))
            if on_result is not None:
                on_result(job, out[-1])
        return out


@contextmanager
def fan_out(spec: FanOut, *, log: Callable[[str], None] = lambda _m: None) -> Iterator[Runner]:
    """A Runner for `spec`; a Ray this starts is shut down at the end (one already running is reused).

    Raises:
        ConfigError: bad options, `--address` without Ray installed, or a Ray that cannot start or be joined.
    """
    spec.check()
    if not spec.ray:
        yield Runner(None)
        return
    try:
        ray: Any = importlib.import_module("ray")
    except ImportError as exc:
        if spec.address is not None:
            raise ConfigError(
                f"--address {spec.address}: Ray is not installed; pip install 'progdistill[ray]', or leave "
                "--address out to run in this process"
            ) from exc
        log("ray is not installed (pip install 'progdistill[ray]'): running every task in this process")
        yield Runner(None)
        return
    started = not ray.is_initialized()
    if started:
        init_ray(ray, address=spec.address, num_cpus=spec.num_cpus)
        interrupts.reclaim()  # ray.init installed its own SIGTERM handler
    try:
        yield Runner(ray)
    finally:
        if started:
            ray.shutdown()


def init_ray(ray: Any, *, address: str | None, num_cpus: int | None) -> None:
    """Start a local Ray (`num_cpus`, default all) or join the cluster at `address`; a cluster that cannot
    be joined is a ConfigError naming --address (nothing was written yet)."""
    try:
        if address is None:
            cpus = num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError, OSError) as exc:
        ray.shutdown()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--address {address}: cannot join a Ray cluster there ({first}); start one with `ray start "
            "--head`, pass its HOST:PORT, or leave --address out for a local Ray"
            if address is not None
            else f"cannot start a local Ray ({first}); nothing was written"
        ) from exc
