"""Read idlehook's results from a Redis stream with a consumer group (XREADGROUP), ack each.

    python examples/consumers/redis_consumer.py --url redis://127.0.0.1:6379/0 \
        --stream idlehook.results --group billing --consumer worker-1

Prints each message (the `body` field: JSON, schema `idlehook.session_result/1`) on a line.
The group starts at the stream's beginning; an entry is acknowledged (XACK) only after it was
handled, so one this consumer crashed on stays pending for the group (XAUTOCLAIM takes it
over). `publish_redis` appends each message once, retries included.
"""

import argparse
import asyncio
import json
import sys
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError


async def consume(args: argparse.Namespace) -> int:
    redis = Redis.from_url(args.url)
    try:
        try:
            await redis.xgroup_create(args.stream, args.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists: carry on where it left off
                raise
        seen = 0
        while args.count is None or seen < args.count:
            batch: Any = await redis.xreadgroup(
                args.group,
                args.consumer,
                {args.stream: ">"},
                count=100,
                block=int(args.idle_seconds * 1000),
            )
            if not batch:
                break  # nothing new within --idle-seconds
            for _, entries in batch:
                for entry_id, fields in entries:
                    message = json.loads(fields[b"body"])
                    handle(message)
                    await redis.xack(args.stream, args.group, entry_id)
                    seen += 1
        return 0
    finally:
        await redis.aclose()


def handle(message: dict[str, object]) -> None:
    # Your code here: the message's `message_id` is unique per transition and plugin.
    print(json.dumps(message), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stream", default="idlehook.results")
    parser.add_argument("--group", default="idlehook-consumers")
    parser.add_argument("--consumer", default="consumer-1")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="stop when idle this long")
    return asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
