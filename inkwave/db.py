"""Database work from async code, with its connection given back when it is done.

channels' `database_sync_to_async` calls `close_old_connections()` around the function, but
outside the context the function runs in: asgiref runs it in a copy of the caller's context,
and Django's connections are context-local. A connection first opened inside that copy (the
first query of a task) was never closed, and with a connection pool it was never given back:
the pool ran dry after as many such tasks as its size (seen in the tests: 20 re-checks of
room access, then every query waited 3 s and failed). Here the closing runs inside.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def closing_connections(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run


def database_sync_to_async(
    func: Callable[P, R], *, thread_sensitive: bool = True
) -> Callable[P, Awaitable[R]]:
    """`func` on a thread (the shared one when `thread_sensitive`), awaitable, its database
    connections closed (or given back to the pool) before and after, where they live."""
    return sync_to_async(closing_connections(func), thread_sensitive=thread_sensitive)
