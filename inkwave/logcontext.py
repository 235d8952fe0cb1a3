"""What every log line of a unit of work carries, bound with structlog's contextvars.

A request's lines carry its `request_id` (monitoring/middleware.py), a room connection's its
`connection` id and venue (orders/consumers.py), a Celery task's its `task_id` and task name.
The request id travels with the work the request causes: as a header of every Celery task
published while it is bound, bound again for that task's lines, and kept on each outbox row
it enqueues and bound while that row is delivered (notifications). So one order can be
followed by its request id from the API call through the broadcast to the Slack delivery.

Work shared by many units (a batch of handshakes, a process's channel-layer membership) runs
in a context of its own (`spawn`): a task started from one connection's context would
otherwise log every later line, and report every error, as that connection's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import structlog

T = TypeVar("T")

# The Celery message header that carries the id of the request that published the task.
REQUEST_ID_HEADER = "inkwave_request_id"


# As monitoring/middleware.py accepts from a trusted proxy, and Notification.request_id keeps.
MAX_REQUEST_ID = 128


def current_request_id() -> str:
    """The id of the request whose work this is ("" outside one)."""
    return str(structlog.contextvars.get_contextvars().get("request_id") or "")[:MAX_REQUEST_ID]


@contextlib.contextmanager
def scope(**fields: Any) -> Iterator[None]:
    """Bind `fields` for a unit of work (a request, a delivery); whatever is bound inside it
    (the venue, the user, once known) is gone after it too, so a thread's next request starts
    clean. A field given as None is unbound inside it (a delivery caused by no request)."""
    before = structlog.contextvars.get_contextvars()
    structlog.contextvars.bind_contextvars(**{k: v for k, v in fields.items() if v is not None})
    structlog.contextvars.unbind_contextvars(*(k for k, v in fields.items() if v is None))
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**before)


def spawn(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start `work` as a task in an empty context: it belongs to no request or connection."""
    return asyncio.get_running_loop().create_task(work, context=contextvars.Context())


def add_request_id_header(headers: dict[str, Any] | None) -> None:
    """Celery's before_task_publish: the publishing request's id goes with the task. Not
    from a task's own publishes (a drain waking itself later): that work is the task's, and
    would otherwise carry one request's id from then on."""
    bound = structlog.contextvars.get_contextvars()
    request_id = "" if "task_id" in bound else current_request_id()
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


def bind_task(task_id: str, task_name: str, request: Any) -> None:
    """Celery's task_prerun: the task's lines carry its id, name and causing request's id."""
    structlog.contextvars.clear_contextvars()
    headers = getattr(request, "headers", None) or {}
    request_id = getattr(request, REQUEST_ID_HEADER, None) or headers.get(REQUEST_ID_HEADER)
    fields: dict[str, Any] = {"task_id": task_id, "task": task_name}
    if request_id:
        fields["request_id"] = str(request_id)[:64]
    structlog.contextvars.bind_contextvars(**fields)


def unbind_task() -> None:
    """Celery's task_postrun: the next task in this process starts clean."""
    structlog.contextvars.clear_contextvars()
