"""The HTTP handler keeps its requests' threads for the next ones (inkwave/http_handler.py),
with Django's guarantees: one request's sync code on one thread, requests in parallel."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from asgiref.testing import ApplicationCommunicator

from inkwave.http_handler import ExecutorPool, PooledASGIHandler
from orders.models import Venue
from tests import perf_urls

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.perf_urls")]


async def thread_of(handler: PooledASGIHandler) -> str:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/perf/thread/",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    communicator = ApplicationCommunicator(handler, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    assert start["status"] == 200
    body = await communicator.receive_output(10)
    await communicator.wait(10)
    return str(json.loads(body["body"])["thread"])


async def test_requests_one_after_another_run_on_the_same_kept_thread() -> None:
    handler = PooledASGIHandler()
    names = [await thread_of(handler) for _ in range(4)]
    assert len(set(names)) == 1
    assert names[0].startswith("inkwave-request")
    assert handler.executors.made == 1


async def test_requests_in_flight_at_once_each_have_a_thread_of_their_own() -> None:
    handler = PooledASGIHandler()
    # Each view waits until all three have come: they only pass if they run in parallel.
    perf_urls.meeting.append(threading.Barrier(3))
    try:
        names = await asyncio.gather(*(thread_of(handler) for _ in range(3)))
    finally:
        perf_urls.meeting.clear()
    assert len(set(names)) == 3
    assert handler.executors.made == 3
    assert len(handler.executors.idle) == 3  # all given back, for the next requests


async def test_an_executor_still_running_a_cancelled_requests_code_is_kept_only_once_idle() -> None:
    pool = ExecutorPool()
    executor = pool.take()
    release = threading.Event()
    running = asyncio.get_running_loop().run_in_executor(executor, release.wait, 10)
    pool.give_back(executor)  # its request ended (cancelled) while the code still runs
    assert pool.idle == []
    assert pool.take() is not executor  # the next request does not wait behind it
    release.set()
    await running
    for _ in range(100):
        if pool.idle:
            break
        await asyncio.sleep(0.01)
    assert pool.idle == [executor]


async def test_the_middleware_chain_runs_in_one_hop_and_async_views_still_answer(
    venue: Venue,
) -> None:
    """Built in sync mode: each middleware's process_request is not a hop of its own."""
    handler = PooledASGIHandler()
    assert not asyncio.iscoroutinefunction(getattr(handler, "_middleware_chain"))  # noqa: B009
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/perf/async/{venue.pk}/",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    communicator = ApplicationCommunicator(handler, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    assert (await communicator.receive_output(10))["status"] == 200
    assert json.loads((await communicator.receive_output(10))["body"]) == {"venues": 1}
    await communicator.wait(10)
