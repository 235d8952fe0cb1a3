"""Django's ASGI handler, run as a WSGI server would: each request's middleware and view on
one kept thread, in one hop from the event loop.

Django under ASGI runs every middleware that can be async in async mode. The project's are
almost all MiddlewareMixin ones (Django's own, sessions, CSRF, auth, messages, axes), whose
async mode sends each process_request and process_response to a thread and back; with one
sync-only middleware in the chain (WhiteNoise) the chain also crosses back. About a dozen
crossings a request, each a thread hand-off: a trivial request cost 6.4 ms of server CPU
(bench/middleware.py). Here the chain is built in sync mode, as under WSGI, and the request
goes to a thread once (an async view is called back on the event loop from there, as Django
does for async views under WSGI): a trivial request runs twice as fast, the admin's login
page 1.4 times (same machine, same run).

Django runs each HTTP request in a ThreadSensitiveContext of its own, so that the request's
sync code (the middleware, a sync view, the ORM) runs on one thread and other requests run in
parallel on theirs. asgiref makes that thread for the request, and at its end starts another
thread to join it: two thread starts per request (py-spy showed Thread.start and the join at
the top of a trivial request's profile; measured alone, on a busy machine, keeping the threads
made no clear difference next to the crossings above).

Here each request borrows a one-thread executor from a pool and gives it back when it ends
(asgiref 3.12+ takes the executor as ThreadSensitiveContext(executor=...) and leaves it to its
owner). The guarantees are Django's: one request's sync code on one thread, requests in
parallel, as many threads as requests in flight; the threads are reused, as a WSGI server's
are. At most KEEP_IDLE idle threads are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

KEEP_IDLE = 32
T = TypeVar("T")


class RequestExecutor(ThreadPoolExecutor):
    """One thread, and whether it still has work: a request cancelled while its sync code
    runs (a client gone, daphne's close timeout) ends before that code returns, and the next
    request must not wait behind it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="inkwave-request")
        self.lock = threading.Lock()
        self.busy = 0
        self.when_idle: Callable[[], None] | None = None

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self.lock:
            self.busy += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Any]) -> None:
        with self.lock:
            self.busy -= 1
            then, self.when_idle = (self.when_idle, None) if self.busy == 0 else (None, None)
        if then is not None:
            then()


class ExecutorPool:
    """Executors of ended requests, kept for the next ones; used on the event loop's thread."""

    def __init__(self, keep: int = KEEP_IDLE) -> None:
        self.keep = keep
        self.idle: list[RequestExecutor] = []
        self.made = 0  # for the tests

    def take(self) -> RequestExecutor:
        if self.idle:
            return self.idle.pop()
        self.made += 1
        return RequestExecutor()

    def give_back(self, executor: RequestExecutor) -> None:
        """Kept at once when its thread has nothing left to run; else once it has (a thread
        still running a cancelled request's code)."""
        with executor.lock:
            if executor.busy:
                loop = asyncio.get_running_loop()
                executor.when_idle = lambda: _call_soon(loop, self._keep, executor)
                return
        self._keep(executor)

    def _keep(self, executor: RequestExecutor) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(executor)
        else:
            executor.shutdown(wait=False)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is stopping
        loop.call_soon_threadsafe(fn, *args)


class PooledASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.executors = ExecutorPool()

    def load_middleware(self, is_async: bool = False) -> None:
        """The chain in sync mode, whatever ASGIHandler asks (see the module's docstring)."""
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # The whole sync chain on the request's thread (its ThreadSensitiveContext's).
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # as Django's
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.executors.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.executors.give_back(executor)
