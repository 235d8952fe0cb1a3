"""A load generator for one HTTP path, on one server or on two in alternation.

    python -m bench.http_client HOST PORT[,PORT2] PATH CONNECTIONS SECONDS [SLICE]

Keeps CONNECTIONS keep-alive connections busy (the next request as soon as the answer is in)
for SECONDS after a second of warm-up, and prints {"requests", "errors", "seconds"} as JSON.
With two ports it keeps CONNECTIONS connections open to each and loads one server, then the
other, in slices of SLICE seconds (default 0.5) until each has had SECONDS: whatever else the
machine does meanwhile falls on both alike, so their ratio is steadier than two runs one
after the other. It then prints one such object per port, in a list.

Raw asyncio streams: the client must cost far less than the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def one_request(stream: Stream, request: bytes) -> bool:
    reader, writer = stream
    writer.write(request)
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status.split(b" ")[1:2] == [b"200"]


async def busy(stream: Stream, request: bytes, until: float, counts: list[int]) -> None:
    while time.monotonic() < until:
        counts[0 if await one_request(stream, request) else 1] += 1


class Target:
    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port = host, port
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        self.streams: list[Stream] = []
        self.counts = [0, 0]
        self.seconds = 0.0

    async def open(self, connections: int) -> None:
        self.streams = [
            await asyncio.open_connection(self.host, self.port) for _ in range(connections)
        ]

    async def load(self, seconds: float, *, counted: bool = True) -> None:
        counts = self.counts if counted else [0, 0]
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(busy(s, self.request, until, counts) for s in self.streams))
        if counted:
            # Up to the last answer: the requests still in flight at the deadline count.
            self.seconds += time.monotonic() - started

    def close(self) -> None:
        for _, writer in self.streams:
            writer.close()

    def result(self) -> dict:
        return {"requests": self.counts[0], "errors": self.counts[1], "seconds": self.seconds}


async def measure(
    host: str, ports: list[int], path: str, connections: int, seconds: float, slice_: float
) -> list[dict]:
    targets = [Target(host, port, path) for port in ports]
    try:
        for target in targets:
            await target.open(connections)
            await target.load(1.0, counted=False)
        step = seconds if len(targets) == 1 else slice_
        while min(t.seconds for t in targets) < seconds:
            for target in targets:
                await target.load(min(step, max(0.05, seconds - target.seconds)))
    finally:
        for target in targets:
            target.close()
    return [target.result() for target in targets]


def main() -> None:
    host, ports, path, connections, seconds = sys.argv[1:6]
    slice_ = float(sys.argv[6]) if len(sys.argv) > 6 else 0.5
    port_list = [int(p) for p in ports.split(",")]
    results = asyncio.run(measure(host, port_list, path, int(connections), float(seconds), slice_))
    print(json.dumps(results[0] if len(results) == 1 else results))


if __name__ == "__main__":
    main()
