"""Structured logs to stderr (JSON for machines, console for people), with libp2p kept quiet.

py-libp2p logs through stdlib `logging` and its DHT floods hundreds of WARNING lines
(`StreamEOF`) in normal operation (notes/py-libp2p.md). So third-party loggers are set one
notch *above* our level (ours at info → theirs at error; ours at debug → theirs at
warning) and whatever still gets through is rate-limited per logger, with a count of what
was dropped, so a misbehaving library can never drown the daemon's own lines.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

from gd.crdt.clock import Clock
from gd.node.clock import SYSTEM_CLOCK

LogFormat = Literal["json", "console"]
LOG_FORMATS: tuple[str, ...] = ("json", "console")
# Loggers we do not own: libp2p and what it drags in.
THIRD_PARTY_LOGGERS = ("libp2p", "multiaddr", "zeroconf", "async_service", "aioquic", "trio")
# Per third-party logger: at most this many records per window, then a single
# "suppressed N" note when the window rolls over. Ten a second is more than a person reads.
THIRD_PARTY_BURST = 10
THIRD_PARTY_WINDOW_S = 10.0
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class ThirdPartyRateLimit(logging.Filter):
    """Handler filter: lets `burst` records per logger prefix through per window."""

    def __init__(self, prefixes: tuple[str, ...] = THIRD_PARTY_LOGGERS,
                 burst: int = THIRD_PARTY_BURST, window_s: float = THIRD_PARTY_WINDOW_S,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._burst = burst
        self._window = window_s
        self._clock = clock
        self._state: dict[str, tuple[float, int, int]] = {}  # prefix -> (start, seen, dropped)

    def _prefix(self, name: str) -> str | None:
        for prefix in self._prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return prefix
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        prefix = self._prefix(record.name)
        if prefix is None:
            return True
        now = self._clock.monotonic()
        start, seen, dropped = self._state.get(prefix, (now, 0, 0))
        if now - start >= self._window:
            if dropped:
                record.msg = f"{record.getMessage()} (and {dropped} more {prefix} lines " \
                             f"suppressed in the last {self._window:.0f} s)"
                record.args = ()
            start, seen, dropped = now, 0, 0
        if seen >= self._burst:
            self._state[prefix] = (start, seen, dropped + 1)
            return False
        self._state[prefix] = (start, seen + 1, dropped)
        return True


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to one stderr handler in the chosen format."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {fmt!r}")
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {sorted(_LEVELS)}, not {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    handler.addFilter(ThirdPartyRateLimit())
    root = logging.getLogger()
    root.handlers = [handler]
    ours = _LEVELS[level]
    root.setLevel(ours)
    theirs = logging.WARNING if ours <= logging.DEBUG else logging.ERROR
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(theirs)


def get_logger(name: str = "gd.node") -> Any:
    return structlog.get_logger(name)
