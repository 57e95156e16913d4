"""Hot reload of the tier family: on SIGHUP or when the models directory's `current` changes.

The reloader runs beside the service: it loads the new family in a worker thread (file reads, hashes and ONNX
sessions stay off the event loop), verifies it exactly as at start-up (manifest, hashes, fit to the config),
warms every tier, and hands it over with `take()`. The service calls `take()` between bars and switches the
engine there, so a bar is decided by the old family or the new one, never by a half-loaded one, and no bar
is missed or decided twice. A family that fails verification is refused with one log line; the old one
keeps deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bot.config import Config
from bot.core.errors import BotError
from bot.models import store as modelstore
from bot.models.family import TierFamily
from bot.observe import logs


class ModelReloader:
    """Watches for a new family; `request()` (SIGHUP) or a changed `current` pointer triggers a load.

    A refused target is not retried by the poll (one error line, not one per poll); a request retries it.

    Args:
        cfg: the running config (models dir, fit checks).
        current: the family deciding now (its directory is the baseline for change detection).
        poll_s: how often the `current` pointer is checked (0 = only on request).
    """

    def __init__(self, cfg: Config, current: TierFamily, *, poll_s: float) -> None:
        self.cfg = cfg
        self.poll_s = poll_s
        self._seen_dir = current.models_dir.resolve()  # the last target tried: polls retry only a new one
        self._model_sha = current.model_sha
        self._requested = asyncio.Event()
        self._ready: TierFamily | None = None
        self.reloads = 0
        self.refused = 0
        self._log: Any = logs.get_logger(component="reload")

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler)."""
        self._requested.set()

    def take(self) -> TierFamily | None:
        """The verified, warmed family to switch to, once; None when there is none."""
        family, self._ready = self._ready, None
        return family

    def _changed(self) -> bool:
        try:
            return modelstore.resolve(self.cfg.models.dir).resolve() != self._seen_dir
        except (BotError, OSError):
            return True  # a broken pointer is worth a (refused, logged) load attempt

    async def run(self) -> None:
        """Until cancelled: wait for a request or a changed pointer, then load, verify and warm."""
        while True:
            if self.poll_s > 0:
                try:
                    await asyncio.wait_for(self._requested.wait(), timeout=self.poll_s)
                except TimeoutError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # a cancel() that raced the timeout (3.11)
                        raise asyncio.CancelledError from None
                    if not self._changed():
                        continue
            else:
                await self._requested.wait()
            self._requested.clear()
            await self._load()

    async def _load(self) -> None:
        with contextlib.suppress(BotError, OSError):
            self._seen_dir = modelstore.resolve(self.cfg.models.dir).resolve()
        try:
            family = await asyncio.to_thread(self._load_verified)
        except BotError as exc:
            self.refused += 1
            self._log.error(logs.MODEL_RELOAD_REFUSED, error=str(exc), keeping=self._model_sha[:12])
            return
        if family.model_sha == self._model_sha:
            self._log.info(logs.MODEL_RELOAD_UNCHANGED, model_sha=family.model_sha[:12])
            return
        self._ready = family
        self.reloads += 1
        for tier in family:
            if tier.choice.refused:
                self._log.warning(logs.COMPILED_FORWARD_REFUSED, tier=tier.name, reason=tier.runtime_reason)
        self._log.info(
            logs.MODEL_RELOAD_READY,
            model_sha=family.model_sha[:12],
            previous=self._model_sha[:12],
            runtimes={tier.name: tier.runtime for tier in family},
        )
        self._model_sha = family.model_sha

    def _load_verified(self) -> TierFamily:
        family = TierFamily.load(self.cfg.models.dir, compiled_forward=self.cfg.models.compiled_forward)
        family.check_fit(self.cfg)
        family.check_routes(self.cfg.regime.routes)
        for name in family.names:
            family.warm(name)
        return family
