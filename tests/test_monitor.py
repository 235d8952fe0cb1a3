from __future__ import annotations

from typing import Any

import pytest

from monitoring.histogram import BUCKET_COUNT, LATENCY_BOUNDS_MS, Histogram, add_buckets, quantile
from monitoring.monitor import (
    CLIENT_ERROR_KINDS,
    SERVICE_ERROR_KINDS,
    DisabledMonitor,
    WebSocketMonitor,
)


def test_it_counts_connections_rooms_and_members() -> None:
    monitor = WebSocketMonitor()
    monitor.track_connection("venue.1")
    monitor.track_connection("venue.1")
    monitor.track_connection("venue.2")
    monitor.track_disconnection("venue.1")
    monitor.track_disconnection("venue.2")
    snap = monitor.snapshot()
    assert (snap.connections, snap.disconnections, snap.active_connections) == (3, 2, 1)
    assert snap.rooms == {"venue.1": 1}


def test_a_rejection_is_a_connection_error_by_reason() -> None:
    monitor = WebSocketMonitor()
    monitor.track_rejection("unauthenticated")
    monitor.track_rejection("unauthenticated")
    monitor.track_error("invalid_json")
    snap = monitor.snapshot()
    assert snap.rejected_connections == 2
    assert snap.client_errors == 3
    assert snap.errors_by_type == {"unauthenticated": 2, "invalid_json": 1}


def test_what_clients_do_wrong_is_counted_apart_from_what_the_service_fails_to_do() -> None:
    monitor = WebSocketMonitor()
    for kind in sorted(CLIENT_ERROR_KINDS):
        monitor.track_error(kind)
    monitor.track_rejection("origin_rejected")
    assert (monitor.errors, monitor.client_errors) == (0, len(CLIENT_ERROR_KINDS) + 1)
    for kind in sorted(SERVICE_ERROR_KINDS):
        monitor.track_error(kind)
    monitor.track_rejection("channel_layer_unavailable")  # refused, but the service's fault
    monitor.track_error("a_failure_nobody_classified_yet")  # counts against the service
    snap = monitor.snapshot()
    assert snap.errors == len(SERVICE_ERROR_KINDS) + 2
    assert snap.client_errors == len(CLIENT_ERROR_KINDS) + 1


def test_every_error_kind_the_code_reports_is_classified() -> None:
    from orders.protocol import REFUSAL_REASONS, ErrorCode

    kinds = {code.value for code in ErrorCode} | set(REFUSAL_REASONS.values())
    assert kinds - CLIENT_ERROR_KINDS - SERVICE_ERROR_KINDS == set()
    assert CLIENT_ERROR_KINDS.isdisjoint(SERVICE_ERROR_KINDS)


def test_snapshots_are_copies_that_later_events_do_not_change() -> None:
    monitor = WebSocketMonitor()
    monitor.track_connection("venue.1")
    monitor.track_error("x")
    snap = monitor.snapshot()
    monitor.track_connection("venue.1")
    monitor.track_error("x")
    assert snap.rooms == {"venue.1": 1}
    assert snap.errors_by_type == {"x": 1}


def test_a_disabled_monitor_counts_nothing() -> None:
    monitor = DisabledMonitor()
    monitor.track_connection("venue.1")
    monitor.track_message_received()
    monitor.track_delivery_latency(5)
    snap = monitor.snapshot()
    assert (snap.connections, snap.messages_received, snap.delivery.count) == (0, 0, 0)


def test_histogram_buckets_by_upper_bound() -> None:
    histogram = Histogram()
    for value in (0.2, 0.5, 0.7, 3, 20_000, -1):
        histogram.observe(value)
    snap = histogram.snapshot()
    assert len(snap.counts) == BUCKET_COUNT
    assert snap.counts[0] == 3  # 0.2, 0.5 (inclusive bound) and the clamped -1
    assert snap.counts[1] == 1  # 0.7 <= 1
    assert snap.counts[LATENCY_BOUNDS_MS.index(5)] == 1
    assert snap.counts[-1] == 1
    assert snap.count == 6


def test_quantiles_interpolate_within_the_bucket() -> None:
    counts = [0] * BUCKET_COUNT
    counts[LATENCY_BOUNDS_MS.index(10)] = 100  # all between 5 and 10 ms
    assert quantile(counts, 0.5) == pytest.approx(7.5)
    assert quantile(counts, 0.99) == pytest.approx(9.95)
    assert quantile([0] * BUCKET_COUNT, 0.5) is None


def test_histograms_from_several_workers_add_up() -> None:
    first, second = [1] * BUCKET_COUNT, [2] * BUCKET_COUNT
    assert add_buckets([first, second]) == [3] * BUCKET_COUNT
    # A row written with other bounds is left out rather than mis-added.
    assert add_buckets([first, [5, 5]]) == first


def test_delta_between_snapshots() -> None:
    histogram = Histogram()
    histogram.observe(1)
    before = histogram.snapshot()
    histogram.observe(1)
    histogram.observe(100)
    delta = histogram.snapshot().minus(before)
    assert delta.count == 2
    assert delta.total == pytest.approx(101)


def test_the_memory_limit_comes_from_the_cgroup_when_one_is_set(tmp_path: Any) -> None:
    from monitoring.system import cgroup_memory_limit

    v2 = tmp_path / "memory.max"
    v2.write_text("536870912\n")
    assert cgroup_memory_limit((v2,)) == 512 * 1024 * 1024
    v2.write_text("max\n")
    assert cgroup_memory_limit((v2,)) is None  # no limit: the machine's memory counts
    v1 = tmp_path / "memory.limit_in_bytes"
    v1.write_text(str(2**63 - 4096))  # v1's way of saying unlimited
    assert cgroup_memory_limit((tmp_path / "absent", v1)) is None
    assert cgroup_memory_limit((tmp_path / "absent",)) is None


def test_memory_usage_reports_this_process() -> None:
    from monitoring.system import memory_usage

    usage = memory_usage()
    assert usage.rss_bytes > 10 * 1024 * 1024
    assert usage.limit_bytes > usage.rss_bytes
    assert 0 < usage.percent < 100
    assert usage.limit_source in ("cgroup", "machine")


def test_the_resident_size_read_per_request_is_the_process_s_own_also_after_a_fork() -> None:
    import os

    import psutil

    from monitoring.system import resident_bytes

    before = resident_bytes()
    assert abs(before - psutil.Process().memory_info().rss) < 8 * 1024 * 1024
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child takes 64 MiB: its figure grows, the parent's does not
        try:
            # Its own starting point: a child's resident size starts below its parent's
            # (the kernel leaves file-backed page tables to be faulted in again).
            before = resident_bytes()
            block = bytearray(64 * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])
            grew = resident_bytes() - before
            os.write(writer, str(grew).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        grown_in_child = int(pipe.read())
    os.waitpid(child, 0)
    assert grown_in_child >= 60 * 1024 * 1024
    assert resident_bytes() - before < 32 * 1024 * 1024
