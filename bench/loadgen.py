"""A small closed-loop HTTP/1.1 load generator: `python -m bench.loadgen --port P [--port Q] ...`.

Each of `--connections` keep-alive connections sends one request, reads the whole answer, and sends the
next, until `--duration` seconds or `--requests` answers (whichever first), after `--warmup` seconds whose
answers are not counted. Connections are spread round-robin over the given ports (one per api worker).
It prints one JSON line: answers, errors, status counts, requests per second and latency percentiles.

It is deliberately minimal (raw asyncio streams on uvloop, a prebuilt request, Content-Length bodies
only) so that it costs as little CPU as possible on the machine it shares with the system under test —
and the same generator measures the baseline, so the ratio is fair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

from bench.stats import summarize


async def connection(
    host: str,
    port: int,
    request: bytes,
    stop_at: float,
    count_from: float,
    budget: list[int],
    latencies: list[float],
    statuses: dict[int, int],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter
    try:
        while budget[0] > 0:
            started = clock()
            if started >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            ended = clock()
            if started >= count_from:
                budget[0] -= 1
                latencies.append(ended - started)
                statuses[status] = statuses.get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    body = args.body.encode()
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    budget = [args.requests]
    now = time.perf_counter()
    count_from = now + args.warmup
    stop_at = count_from + args.duration
    tasks = [
        connection("127.0.0.1", args.port[i % len(args.port)], request, stop_at, count_from, budget, latencies,
                   statuses, errors)
        for i in range(args.connections)
    ]  # fmt: skip
    await asyncio.gather(*tasks)
    elapsed = min(time.perf_counter(), stop_at) - count_from
    result: dict[str, object] = {
        "connections": args.connections,
        "ports": len(args.port),
        "answers": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:3],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        **summarize(latencies),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--path", default="/api/qwen/generate-async")
    parser.add_argument("--body", required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
