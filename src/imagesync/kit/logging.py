from __future__ import annotations

import logging
import os
import re
import sys

import structlog


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """structlog events to stderr: `sync.job.applied key=value ...` or JSON lines. An
    exception is one plain traceback: no local variables, no frames drawn in boxes (those
    took seconds and thousands of lines per crash). Colours only on a terminal, and not
    with `NO_COLOR` set."""
    colors = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info
            if fmt == "json"
            else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


class _CurrentStderr:
    """Whatever `sys.stderr` is when an event is written, not when logging was set up:
    loggers are cached on first use, and a test runner may swap the stream meanwhile."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# A token where it should not be (a query string) is still never written to a log.
_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|key|password|secret|authorization)=)[^&#\s]*"
)
_TOKEN = re.compile(r"isk_[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    """`text` without the values of secret-looking query parameters or any API token."""
    return _TOKEN.sub("isk_[redacted]", _SECRET_PARAM.sub(r"\1[redacted]", text))


class RedactSecrets(logging.Filter):
    """Redacts the request line of the server's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_access_log() -> None:
    """Install `RedactSecrets` on uvicorn's access log, once."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in access.filters):
        access.addFilter(RedactSecrets())
