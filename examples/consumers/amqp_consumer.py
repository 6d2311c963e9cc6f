"""Read idlehook's results from RabbitMQ: a durable queue bound to the exchange, ack each.

    python examples/consumers/amqp_consumer.py --url amqp://guest:guest@127.0.0.1:5672/ \
        --exchange idlehook --routing-key idlehook.results --queue billing

Prints each message (JSON, schema `idlehook.session_result/1`) on a line. Declare the queue
before idlehook publishes: `publish_amqp` publishes `mandatory`, so until a queue is bound its
runs fail and are retried. AMQP keeps no de-duplication of its own: a publish retried after a
lost confirm can arrive twice, so this consumer drops a `message_id` it has already handled
(in memory here; keep the ids where you keep the results, in the same transaction).
"""

import argparse
import asyncio
import json
import sys

import aio_pika


async def consume(args: argparse.Namespace) -> int:
    connection = await aio_pika.connect(args.url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.declare_queue(args.queue, durable=True)
        if args.exchange:
            exchange = await channel.declare_exchange(args.exchange, "topic", durable=True)
            await queue.bind(exchange, routing_key=args.routing_key)
        handled: set[str] = set()
        seen = 0
        async with queue.iterator() as messages:
            while args.count is None or seen < args.count:
                try:
                    message = await asyncio.wait_for(anext(messages), args.idle_seconds)
                except TimeoutError:
                    break  # nothing new within --idle-seconds
                async with message.process():  # acked once handled; requeued if this raises
                    if message.message_id in handled:
                        print(f"repeat dropped: {message.message_id}", file=sys.stderr)
                        continue
                    handle(json.loads(message.body))
                    handled.add(str(message.message_id))
                    seen += 1
        return 0
    finally:
        await connection.close()


def handle(message: dict[str, object]) -> None:
    # Your code here: `message_id` is unique per transition and plugin.
    print(json.dumps(message), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", default="idlehook")
    parser.add_argument("--routing-key", default="idlehook.results")
    parser.add_argument("--queue", default="idlehook-results")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="stop when idle this long")
    return asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
