"""One asyncio event loop per process for every ``async def`` function, as the Python worker has.

Why not ``asyncio.run`` per call: azure-functions-durable keeps ONE module-global aiohttp session
(``models/utils/http_utils.py``) bound to the loop that created it. Once that loop is closed every
later durable-client call in the process fails with ``RuntimeError: Event loop is closed`` (the
SDK only resets the session on aiohttp errors). A single long-lived loop in a daemon thread, shared
by every local host, the durable-client tests and the local runner, avoids that. As a second
guard, a session left behind by someone else's loop is dropped before our coroutine runs, and ours
is closed when no invocation is in flight, so a later ``asyncio.run`` elsewhere starts clean too.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_in_flight = 0


def _loop_thread(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


def event_loop() -> asyncio.AbstractEventLoop:
    """The process-wide worker loop, started on first use (daemon thread: ends with the process)."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            threading.Thread(
                target=_loop_thread, args=(loop, ready), name="functions-worker-loop", daemon=True
            ).start()
            ready.wait()
            _loop = loop
        return _loop


def _durable_http_utils() -> Any:
    from azure.durable_functions.models.utils import http_utils

    return http_utils


async def _guarded(coro: Coroutine[Any, Any, T]) -> T:
    global _in_flight
    http_utils = _durable_http_utils()
    session = getattr(http_utils, "_client_session", None)
    if session is not None and getattr(session, "_loop", None) is not asyncio.get_running_loop():
        # Created on another (probably closed) loop: unusable here, and not ours to close.
        http_utils._client_session = None
    _in_flight += 1
    try:
        return await coro
    finally:
        _in_flight -= 1
        if _in_flight == 0:
            await http_utils._close_session()


def submit(coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Schedule ``coro`` on the worker loop from any other thread."""
    loop = event_loop()
    if _running_in(loop):
        coro.close()
        raise RuntimeError("submit() called from the worker loop itself; await the coroutine instead")
    return asyncio.run_coroutine_threadsafe(_guarded(coro), loop)


def run_coroutine(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the worker loop and wait for its result (raises what it raises)."""
    return submit(coro).result(timeout)


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call_function(fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None = None) -> Any:
    """Invoke a function the way the worker does: ``async def`` on the loop, plain ones in this thread."""
    if inspect.iscoroutinefunction(fn):
        return run_coroutine(fn(**kwargs), timeout)
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        return run_coroutine(_await(result), timeout)
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable
