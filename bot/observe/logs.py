"""The one place that configures logging, and the event names the project logs.

structlog renders JSON lines (to stdout for journald, and to the decisions file when configured) or a
pretty console on a TTY. Event names are constants below; context (`symbol`, `tier`) is bound, never
formatted into the message.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec
import structlog

from bot.bybit.log_events import (  # noqa: F401 (re-exported: every event name is here)
    BACKFILL,
    BACKFILL_FAILED,
    BACKFILL_PAGE,
    BACKFILL_PROGRESS,
    BAR_DUPLICATE,
    BAR_LATE,
    BAR_SKIPPED,
    REST_BANNED,
    REST_RETRY,
    SYMBOL_EXCLUDED,
    WS_BAD_FRAME,
    WS_CONNECTED,
    WS_PLANNED,
    WS_RECONNECT,
    WS_STALE,
    WS_SUBSCRIBED,
    WS_UNKNOWN_TOPIC,
)
from bot.core.errors import ConfigError
from bot.outputs import file_target_reason

# ---- event names (the exchange edge's own are in bot/bybit/log_events.py, re-exported here) ------------
BAR_DECIDED: Final = "bar_decided"  # the canonical line: one per confirmed bar
DECISION_LAG: Final = "decision_lag"  # a symbol has more closed-but-undecided bars than allowed
DECISION_LAG_RECOVERED: Final = "decision_lag_recovered"
DRIFT: Final = "drift"  # a feature's PSI reached [service] drift_psi_warn (once per crossing, per symbol)
DRIFT_RECOVERED: Final = "drift_recovered"
SYMBOLS_RESOLVED: Final = "symbols_resolved"  # a [market] symbols selection resolved from the exchange
SYMBOL_JOINED: Final = "symbol_joined"  # a re-resolution added a symbol: decided from a bar boundary
SYMBOL_STOPPED: Final = "symbol_stopped"  # a symbol left (delisted, suspended, dropped): closed on paper
SYMBOLS_REVIEW_FAILED: Final = "symbols_review_failed"  # re-resolution REST failed: retried later
REGIME_CHANGE: Final = "regime_change"
TIER_LOADED: Final = "tier_loaded"  # with the runtime serving the tier (compiled or onnxruntime) and why
# a tier's compiled forward pass was refused (an unexpected graph or no parity with onnxruntime): it keeps ORT
COMPILED_FORWARD_REFUSED: Final = "compiled_forward_refused"
RETURN_NO_SKILL: Final = "return_no_skill"  # start-up: the family's return IC is within 2 SE of zero
MODEL_RELOAD_READY: Final = "model_reload_ready"  # a new family is verified and warm; switches at a bar
MODEL_RELOAD_REFUSED: Final = "model_reload_refused"  # the new family failed verification; the old decides
MODEL_RELOAD_UNCHANGED: Final = "model_reload_unchanged"
MODEL_SWITCHED: Final = "model_switched"  # the bar from which the new family decides
SERVICE_START: Final = "service_start"
SERVICE_READY: Final = "service_ready"
STATUS_EXPOSED: Final = "status_exposed"  # [service] expose_remote: /metrics + /status beyond loopback
SERVICE_STOP: Final = "service_stop"
SERVICE_STOPPED: Final = "service_stopped"
SHUTDOWN_TIMEOUT: Final = "shutdown_timeout"  # a shutdown step overran service.shutdown_timeout_s
SHUTDOWN_STEP_FAILED: Final = "shutdown_step_failed"  # a closing step raised; the shutdown goes on
CONFIG_ERROR: Final = "config_error"

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class RotatingLog:
    """The decision log file: appended one whole line at a time; once a line would take it past
    `max_bytes` it is renamed `<path>.1` first (`.1` -> `.2` ... up to `keep`, the oldest dropped), so a line
    is never split or lost across files. `max_bytes = 0` never rotates.
    """

    def __init__(self, path: Path, *, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._f = path.open("a", encoding="utf-8")
        self.size = self._f.tell()

    def write(self, text: str) -> None:
        """Append `text` (one or more whole lines), rotating first when it would not fit."""
        n = len(text.encode())
        if self.max_bytes and self.size and self.size + n > self.max_bytes:
            self._rotate()
        self._f.write(text)
        self.size += n

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def _rotate(self) -> None:
        self._f.close()
        for i in range(self.keep, 0, -1):
            src = self.path if i == 1 else rotated(self.path, i - 1)
            if src.exists():
                os.replace(src, rotated(self.path, i))  # the one at `keep` is overwritten: dropped
        self._f = self.path.open("a", encoding="utf-8")
        self.size = 0


def rotated(path: Path, n: int) -> Path:
    """The `n`-th rotated decision log beside `path` (`decisions.jsonl.1` is the newest rotated one)."""
    return path.with_name(f"{path.name}.{n}")


def decision_log_files(path: str | Path) -> list[Path]:
    """The decision log and its rotated files that exist, oldest first (so lines read in log order)."""
    p = Path(path)
    old = sorted(
        (q for q in p.parent.glob(p.name + ".*") if q.name[len(p.name) + 1 :].isdigit()),
        key=lambda q: int(q.name[len(p.name) + 1 :]),
        reverse=True,
    )
    return [*old, *([p] if p.exists() else [])]


class _TeeLogger:
    """Writes each rendered line to stdout and, when set, to the decision log file (line-buffered)."""

    def __init__(self, stream: TextIO, file: RotatingLog | None) -> None:
        self._stream = stream
        self._file = file

    def msg(self, message: str) -> None:
        self._stream.write(message + "\n")
        self._stream.flush()
        if self._file is not None:
            self._file.write(message + "\n")
            self._file.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class _TeeLoggerFactory:
    def __init__(self, stream: TextIO, file: RotatingLog | None) -> None:
        self._logger = _TeeLogger(stream, file)

    def __call__(self, *args: Any) -> _TeeLogger:
        return self._logger


_open_file: RotatingLog | None = None
_decision_out: _TeeLogger | None = None  # where `write_decision` lines go (None: level above info)
_encoder = msgspec.json.Encoder(enc_hook=str)  # anything msgspec cannot encode natively is logged as str()


def _dumps(obj: Any, **_: Any) -> str:
    """structlog serializer: msgspec's encoder (faster than json.dumps)."""
    return _encoder.encode(obj).decode()


_last_options: dict[str, Any] = {}


def check_decisions_path(decisions_path: str | Path) -> None:
    """Raise ConfigError (naming `logging.decisions_path`) when the log cannot be appended to: a directory,
    a parent that is a file, a path that is not writable. Creates nothing."""
    path = Path(decisions_path)
    why = file_target_reason(path)
    if why is not None:
        raise _decisions_error(path, why)


def _decisions_error(path: Path, why: str) -> ConfigError:
    return ConfigError(f"[logging] decisions_path {path}: {why}; point it at a file in a writable directory")


def open_decisions(decisions_path: str | Path, *, rotate_bytes: int = 0, keep_files: int = 10) -> RotatingLog:
    """Open the decision log for appending (parents created); ConfigError naming the key when it cannot."""
    path = Path(decisions_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return RotatingLog(path, max_bytes=rotate_bytes, keep=keep_files)
    except OSError as exc:
        raise _decisions_error(path, f"cannot open for appending ({exc.strerror})") from exc


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    decisions_path: str | Path | None = None,
    stream: TextIO | None = None,
    rotate_bytes: int = 0,
    keep_files: int = 10,
) -> None:
    """Configure structlog for the process. Call once at start-up (calling again reconfigures).

    Args:
        level: minimum level name ("debug", "info", "warning", "error").
        fmt: "json", "console", "auto" (console on a TTY, JSON otherwise), or "plain" (one short line per
            event, e.g. `retrying GET ... in 0.5 s (attempt 1 failed: ...)`; no decisions file).
        decisions_path: JSONL file that also gets every line (parent created); None = stdout only.
        stream: where lines go besides the file (default stdout).
        rotate_bytes: rotate the decision log before it grows past this size (0 = never); see RotatingLog.
        keep_files: rotated files kept beside it (`<path>.1` newest ... `<path>.<keep_files>` oldest).
    """
    global _open_file, _decision_out
    _last_options.update(level=level, fmt=fmt, stream=stream)
    out = stream if stream is not None else sys.stdout
    if _open_file is not None:
        _open_file.close()
        _open_file = None
    if decisions_path is not None:
        _open_file = open_decisions(decisions_path, rotate_bytes=rotate_bytes, keep_files=keep_files)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    if fmt == "plain":
        _decision_out = None
        processors_plain: list[Any] = [structlog.contextvars.merge_contextvars, _plain]
        structlog.configure(
            processors=processors_plain,
            wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
            logger_factory=_TeeLoggerFactory(out, None),
            cache_logger_on_first_use=False,
        )
        return
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if use_console and _open_file is None:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=_dumps))
    factory = _TeeLoggerFactory(out, _open_file)
    _decision_out = factory() if _LEVELS[level] <= logging.INFO else None
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def _plain(logger: Any, name: str, event_dict: dict[str, Any]) -> str:
    """`fmt="plain"`: one short line for a person at a terminal (the offline commands' progress on stderr)."""
    event = event_dict.pop("event", "")
    for key in ("ts", "level", "component"):
        event_dict.pop(key, None)
    if event == REST_RETRY:
        return (
            f"retrying {event_dict.get('what')} in {event_dict.get('delay_s')} s "
            f"(attempt {int(event_dict.get('attempt', 0)) + 1} failed: {event_dict.get('cause')})"
        )
    return f"{event}: " + ", ".join(f"{k}={v}" for k, v in event_dict.items())


def write_decision(line: bytes) -> None:
    """Append one encoded `bar_decided` record (`bot.core.decision.encode_line`) to the same outputs as the
    other lines, bypassing structlog's processor chain: the per-bar hot path is one encode and one write."""
    if _decision_out is not None:
        _decision_out.msg(line.decode())
    elif not _last_options:  # logging never configured: stdout, like structlog's default
        sys.stdout.write(line.decode() + "\n")


def close_logging() -> None:
    """Flush and close the decisions file, if any; later lines go to stdout only."""
    global _open_file
    if _open_file is not None:
        _open_file.close()
        _open_file = None
        configure_logging(**_last_options)


def get_logger(**context: Any) -> Any:
    """A structlog logger with `context` bound (e.g. `symbol=...`)."""
    return structlog.get_logger().bind(**context)
