"""Django's ASGI handler, with the threads of its requests' sync code kept for the next ones.

Django runs each HTTP request in a ThreadSensitiveContext of its own, so that the request's
sync code (the middleware, a sync view, the ORM) runs on one thread and other requests run in
parallel on theirs. asgiref makes that thread for the request, and at its end starts another
thread to join it: two thread starts per request, about two thirds of a trivial request's time
under daphne (bench/middleware.py; py-spy showed Thread.start and the join at the top).

Here each request borrows a one-thread executor from a pool and gives it back when it ends
(asgiref 3.12+ takes the executor as ThreadSensitiveContext(executor=...) and leaves it to its
owner). The guarantees are Django's: one request's sync code on one thread, requests in
parallel, as many threads as requests in flight; the threads are reused, as a WSGI server's
are. At most KEEP_IDLE idle threads are kept.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

KEEP_IDLE = 32


class ExecutorPool:
    """One-thread executors; used on the event loop's thread only, so it needs no lock."""

    def __init__(self, keep: int = KEEP_IDLE) -> None:
        self.keep = keep
        self.idle: list[ThreadPoolExecutor] = []
        self.made = 0  # for the tests

    def take(self) -> ThreadPoolExecutor:
        if self.idle:
            return self.idle.pop()
        self.made += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inkwave-request")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        # asgiref waits for a request's sync call to return even when the request is
        # cancelled (a client gone), so an executor given back has nothing left to run.
        if len(self.idle) < self.keep:
            self.idle.append(executor)
        else:
            executor.shutdown(wait=False)


class PooledASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.executors = ExecutorPool()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # as Django's
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.executors.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.executors.give_back(executor)
