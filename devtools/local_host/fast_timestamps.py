"""A faster, result-identical timestamp parser for the SDK's replay, installed only in this process.

Replay parses every history event's ``Timestamp`` with ``dateutil.parser.parse`` (about 45 us
each; ~85% of replay time, specs/durable-replay.md section 6), and a replay reads the whole history
every episode. The engine writes timestamps in one fixed shape (``YYYY-MM-DDTHH:MM:SS.ffffffZ``);
for exactly that shape this parser returns what dateutil returns -- same fields and the very tzinfo
zone dateutil picks for ``Z`` on this machine (``tzlocal()`` when the local zone is UTC,
``tzutc()`` otherwise) -- and it hands every other text to dateutil unchanged. The SDK's behaviour
therefore does not change; only the time it takes.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

_MODULE = "azure.durable_functions.models.history.HistoryEvent"
_SAMPLES = (
    "2000-01-01T00:00:00.000000Z",
    "2024-02-29T23:59:59.999999Z",
    "2031-07-15T12:34:56.123456Z",
)
_lock = threading.Lock()


def make_fast_parser(original: Callable[..., datetime]) -> Callable[..., datetime]:
    """Wrap ``original`` (dateutil's parse) with a fast path for the engine's own format."""
    zone = original(_SAMPLES[0]).tzinfo

    def parse(text: Any, *args: Any, **kwargs: Any) -> datetime:
        if (
            not args
            and not kwargs
            and isinstance(text, str)
            and len(text) == 27
            and text[26] == "Z"
            and text[10] == "T"
            and text[19] == "."
        ):
            try:
                return datetime.fromisoformat(text[:26]).replace(tzinfo=zone)
            except ValueError:
                pass
        return original(text, *args, **kwargs)

    parse.__dict__["local_host_fast"] = True
    return parse


def install() -> bool:
    """Swap the SDK's parser for the fast one; idempotent. False when it would change results."""
    with _lock:
        module: Any = importlib.import_module(_MODULE)
        original = module.dt_parse
        if getattr(original, "local_host_fast", False):
            return True
        fast = make_fast_parser(original)
        for sample in _SAMPLES:
            expected, actual = original(sample), fast(sample)
            same_zone = type(expected.tzinfo) is type(actual.tzinfo) and expected.tzinfo == actual.tzinfo
            if (
                expected != actual
                or not same_zone
                or expected.replace(tzinfo=None) != actual.replace(tzinfo=None)
            ):
                return False
        module.dt_parse = fast
        return True


def installed() -> bool:
    module: Any = importlib.import_module(_MODULE)
    return bool(getattr(module.dt_parse, "local_host_fast", False))
