"""Process memory and CPU, read with psutil once per flush (never per event)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

# cgroup v2, then v1: the container's memory limit when there is one.
_CGROUP_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    rss_bytes: int
    limit_bytes: int
    limit_source: str  # "cgroup" or "machine"

    @property
    def percent(self) -> float:
        return 100.0 * self.rss_bytes / self.limit_bytes if self.limit_bytes else 0.0


def cgroup_memory_limit(files: tuple[Path, ...] = _CGROUP_LIMIT_FILES) -> int | None:
    machine = psutil.virtual_memory().total
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if not text.isdigit():
            return None  # "max": no limit set
        limit = int(text)
        # v1 reports an absurdly large number when unlimited.
        return limit if 0 < limit < machine else None
    return None


_process: psutil.Process | None = None
_process_pid: int | None = None


def _this_process() -> psutil.Process:
    global _process, _process_pid
    if _process is None or _process_pid != os.getpid():
        _process, _process_pid = psutil.Process(), os.getpid()
    return _process


def memory_usage() -> MemoryUsage:
    rss = _this_process().memory_info().rss
    limit = cgroup_memory_limit()
    if limit is not None:
        return MemoryUsage(rss, limit, "cgroup")
    return MemoryUsage(rss, psutil.virtual_memory().total, "machine")


def cpu_seconds() -> float:
    times = _this_process().cpu_times()
    return float(times.user + times.system)
