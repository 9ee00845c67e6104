"""The raw Kafka baseline: read every record of one topic and produce it unchanged to another, as fast as
confluent-kafka allows. The fastest a consume->produce service can be on this machine and broker.

    python -m bench.raw_copy --bootstrap HOST:PORT --source T --target T2 --expect N

Prints one JSON line: records copied, seconds from the first record read to the last acknowledged, its CPU
seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--expect", type=int, required=True, help="records to copy before stopping")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    # Partitions assigned directly: no group join, which the timing would otherwise include.
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "raw-copy", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    partitions = consumer.list_topics(args.source, timeout=10).topics[args.source].partitions
    consumer.assign([TopicPartition(args.source, p, OFFSET_BEGINNING) for p in partitions])
    copied, first = 0, None
    deadline = time.monotonic() + args.timeout
    while copied < args.expect and time.monotonic() < deadline:
        for msg in consumer.consume(10000, 0.5):
            if msg.error():
                continue
            first = first or time.monotonic()
            while True:
                try:
                    producer.produce(args.target, msg.value(), msg.key(), partition=msg.partition())
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.monotonic() - first if first else 0.0
    consumer.close()
    # Its own CPU and peak RSS: the caller cannot read /proc of a process that has exited.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"copied": copied, "seconds": elapsed, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
