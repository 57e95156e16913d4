"""The one backoff policy of the Bybit edge: capped exponential with jitter (reconnects, REST retries)."""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable

#: getaddrinfo errors that say the name does not exist (EAI_AGAIN, a resolver that did not answer, is
#: transient and retried).
_NO_SUCH_HOST = frozenset(
    code for code in (getattr(socket, n, None) for n in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL")) if code
)


def permanent_cause(exc: BaseException) -> str | None:
    """Why a connection error will not go away by retrying (None: transient, retry with backoff).

    The one place that tells them apart for REST and the websocket: an unresolvable host name and a TLS
    failure (bad certificate, wrong protocol) are permanent; timeouts, refused or reset connections and a
    resolver that did not answer are transient. HTTP statuses are decided by the callers.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # aiohttp and websockets wrap the OSError
        seen.add(id(cur))
        if isinstance(cur, socket.gaierror) and cur.errno in _NO_SUCH_HOST:
            return f"unknown host ({cur.strerror}); check the host name in the URL"
        if isinstance(cur, ssl.SSLError):
            return f"TLS failure ({cur}); check the URL's scheme, host and the system's CA certificates"
        nxt = getattr(cur, "os_error", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    return None


class Backoff:
    """Delay before retry number `attempt` (0-based): `min(max_s, initial_s * 2**attempt)` times a jitter
    factor drawn uniformly from `[jitter_low, 1]`.

    Args:
        initial_s: the first delay's cap, seconds (> 0).
        max_s: cap for every delay, seconds (>= initial_s).
        jitter_low: lower end of the jitter factor, in [0, 1]; 1 = no jitter.
        rand: a uniform(a, b) source (default `random.uniform`; tests pass a fixed one).
    """

    __slots__ = ("_rand", "initial_s", "jitter_low", "max_s")

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        jitter_low: float = 0.5,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(
                f"backoff must satisfy 0 < initial_s <= max_s, got initial_s={initial_s}, max_s={max_s}"
            )
        if not 0 <= jitter_low <= 1:
            raise ValueError(f"jitter_low must be in [0, 1], got {jitter_low}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter_low = jitter_low
        self._rand = rand

    def cap_s(self, attempt: int) -> float:
        """The delay before jitter for retry `attempt` (0-based), seconds."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # 2.0**attempt overflows (OverflowError) past 1023, long after any cap is reached
        return min(self.max_s, self.initial_s * 2.0 ** min(attempt, 64))

    def delay_s(self, attempt: int) -> float:
        """The jittered delay before retry `attempt` (0-based), seconds, in `[jitter_low * cap, cap]`."""
        return self.cap_s(attempt) * self._rand(self.jitter_low, 1.0)
