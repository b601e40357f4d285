"""Structured run events on the standard `logging` module, and where they go.

Modules log through `logging.getLogger(__name__)` (children of the `pipeline` logger). An event is a
record whose `extra` holds `event` (its name, e.g. "request.retry") and flat fields (e.g. `provider`,
`status`); `event()` below logs one, and costs one `isEnabledFor` check when nothing listens. The
structured-output and stream warnings of `endpoints/negotiate.py` use the same shape.

`KeyMask` masks anything shaped like an API key (and the run's own keys, exactly) in every record a
handler it guards sees; `JsonLines` writes records as one JSON object a line (`pipeline run --log`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import JobError, mask_secret, mask_secrets

__all__ = ["JsonLines", "KeyMask", "event", "json_log"]

ROOT = "pipeline"

# What every LogRecord carries: anything else on a record came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log the event `name` with `fields` (the message is the name, as structlog and stamina do)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"event": name, **fields})


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record (its event name included)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class KeyMask(logging.Filter):
    """Masks key-shaped text (errors.mask_secrets) and the given secrets in a record's message and fields."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, mask_secret(s))
        return mask_secrets(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self._mask(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        for k, v in fields_of(record).items():
            if not isinstance(v, int | float | bool | type(None)):
                setattr(record, k, _masked(v, self._mask))
        return True


def _masked(v: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(v, str):
        return mask(v)
    if isinstance(v, list | tuple):
        return [_masked(x, mask) for x in v]
    if isinstance(v, dict):
        return {str(k): _masked(x, mask) for k, x in v.items()}
    if isinstance(v, int | float | bool | type(None)):
        return v
    return mask(str(v))


class JsonLines(logging.Handler):
    """One JSON object a line: ts (UTC, ISO 8601), level, event, logger, message (when it is not the
    event name), then the event's fields."""

    def __init__(self, stream: Any, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.addFilter(KeyMask(secrets))

    def format(self, record: logging.LogRecord) -> str:
        fields = fields_of(record)
        message = record.getMessage()
        name = fields.pop("event", None) or message
        obj: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": name,
            "logger": record.name,
        }
        if message != name:
            obj["message"] = message
        obj.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            obj["error"] = mask_secrets(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return json.dumps(obj, ensure_ascii=False, default=str)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def json_log(path: Path, secrets: Iterable[str | None] = ()) -> Iterator[JsonLines]:
    """Write the `pipeline` logger's events (INFO and up) to `path` as JSON lines while the block runs.

    The file is opened (appended to) before anything runs: one that cannot be written is a JobError.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise JobError(
            f"--log {path}: cannot write the log file ({exc.strerror or exc}); give a path in a writable directory"
        ) from None
    handler = JsonLines(stream, secrets)
    logger = logging.getLogger(ROOT)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        stream.close()
