"""A closed-loop HTTP/1.1 keep-alive load generator, run as its own process.

Portable fallback for wrk: raw asyncio streams (uvloop when present), every request a distinct,
freshly signed webhook, spread over the given targets. Prints one JSON line of figures.
"""

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Iterator

from standardwebhooks import Webhook

from bench.common import SECRET, WEBHOOK_PATH, event_ids, percentile, signed_event


def requests(sessions: list[str], count: int, host: str, ordered: bool = False) -> list[bytes]:
    signer = Webhook(SECRET)
    event_id_at = event_ids(ordered)
    out = []
    for i in range(count):
        body, headers = signed_event(signer, event_id_at(i), sessions[i % len(sessions)])
        lines = [f"POST {WEBHOOK_PATH} HTTP/1.1", f"host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"content-length: {len(body)}")
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return out


class Stats:
    def __init__(self) -> None:
        self.measure_from = 0.0
        self.measure_to = 0.0
        self.latencies: list[float] = []
        self.status: dict[int, int] = {}
        self.measured_ok = 0
        self.errors = 0


async def connection(
    host: str, port: int, pool: Iterator[bytes], stats: Stats, stop_at: float
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for raw in pool:
            now = time.perf_counter()
            if now >= stop_at:
                return
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            done = time.perf_counter()
            stats.status[status] = stats.status.get(status, 0) + 1
            if stats.measure_from <= now and done <= stats.measure_to:
                stats.latencies.append(done - now)
                if 200 <= status < 300:
                    stats.measured_ok += 1
    except (OSError, asyncio.IncompleteReadError):
        stats.errors += 1
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    targets = [t.rsplit(":", 1) for t in args.targets.split(",")]
    raw = requests(args.sessions.split(","), args.count, targets[0][0], args.ordered)
    pool = iter(raw)  # shared: every request is sent once, whichever connection takes it
    stats = Stats()
    start = time.perf_counter()
    stats.measure_from = start + args.warmup
    stats.measure_to = start + args.warmup + args.duration
    tasks = [
        connection(host, int(port), pool, stats, stats.measure_to)
        for (host, port), _ in zip(itertools.cycle(targets), range(args.connections), strict=False)
    ]
    await asyncio.gather(*tasks)
    lat = stats.latencies
    sent = sum(stats.status.values())
    return {
        "requests": sent,
        "ok": sum(n for s, n in stats.status.items() if 200 <= s < 300),
        "status": stats.status,
        "errors": stats.errors,
        "exhausted": sent >= len(raw),
        "rps": stats.measured_ok / args.duration,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", required=True, help="host:port[,host:port...]")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--sessions", default="sesn_bench")
    parser.add_argument("--ordered", action="store_true", help="ids in sending order")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
