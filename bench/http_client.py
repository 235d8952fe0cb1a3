"""A load generator for one HTTP path: `python -m bench.http_client HOST PORT PATH CONNECTIONS
SECONDS` keeps CONNECTIONS keep-alive connections busy (the next request as soon as the
answer is in) for SECONDS after a second of warm-up, and prints {"requests", "errors",
"seconds"} as JSON. Raw asyncio streams: the client must cost far less than the server."""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def one_connection(
    host: str, port: int, request: bytes, until: float, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            counts[0 if status.split(b" ")[1:2] == [b"200"] else 1] += 1
    finally:
        writer.close()


async def measure(host: str, port: int, path: str, connections: int, seconds: float) -> dict:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    warm = [0, 0]
    await asyncio.gather(
        *(
            one_connection(host, port, request, time.monotonic() + 1.0, warm)
            for _ in range(connections)
        )
    )
    counts = [0, 0]
    started = time.monotonic()
    await asyncio.gather(
        *(
            one_connection(host, port, request, started + seconds, counts)
            for _ in range(connections)
        )
    )
    return {"requests": counts[0], "errors": counts[1], "seconds": time.monotonic() - started}


def main() -> None:
    host, port, path, connections, seconds = sys.argv[1:6]
    result = asyncio.run(measure(host, int(port), path, int(connections), float(seconds)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
