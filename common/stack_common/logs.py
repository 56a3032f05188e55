"""Structured logging: one JSON object per line, with any ``extra=`` fields merged in."""
from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """Configure the root logger once (idempotent: replaces our own handler)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_stack_common", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._stack_common = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's access log duplicates our request metrics; keep its errors.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
