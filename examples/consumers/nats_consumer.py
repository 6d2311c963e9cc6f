"""Read idlehook's results from NATS JetStream with a durable pull consumer, ack each.

    python examples/consumers/nats_consumer.py --url nats://127.0.0.1:4222 \
        --stream IDLEHOOK_RESULTS --subject idlehook.results --durable billing

Prints each message (JSON, schema `idlehook.session_result/1`) on a line. The durable consumer
remembers what was acknowledged: a message not acked (a crash while handling it) is delivered
again after `ack_wait`. JetStream stored each message once: `publish_nats` sets `Nats-Msg-Id`.
"""

import argparse
import asyncio
import json
import sys

import nats
from nats.errors import TimeoutError as NatsTimeout


async def consume(args: argparse.Namespace) -> int:
    client = await nats.connect(args.url)
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe(
            args.subject, durable=args.durable, stream=args.stream
        )
        seen = 0
        while args.count is None or seen < args.count:
            try:
                batch = await subscription.fetch(100, timeout=args.idle_seconds)
            except (NatsTimeout, TimeoutError):  # the client raises either
                break  # nothing new within --idle-seconds
            for msg in batch:
                handle(json.loads(msg.data))
                await msg.ack()
                seen += 1
        return 0
    finally:
        await client.close()


def handle(message: dict[str, object]) -> None:
    # Your code here: the message's `message_id` is unique per transition and plugin.
    print(json.dumps(message), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="IDLEHOOK_RESULTS")
    parser.add_argument("--subject", default="idlehook.results")
    parser.add_argument("--durable", default="idlehook-consumers")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="stop when idle this long")
    return asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
