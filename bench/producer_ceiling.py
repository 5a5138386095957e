"""The Kafka ceiling: the raw aiokafka producer with the relay's settings, no HTTP.

It sends the records that the relay would publish for the benchmark's
deliveries: the same topics, keys, values and headers, routed by the relay's
own routing code before the clock starts. The producer has the relay's
settings. At saturation, ``concurrency`` tasks each send and wait for the
acknowledgement in a loop. At a fixed rate, sends start on schedule in an open
loop.

It runs as its own process so that its CPU time and peak RSS are its own,
on the event loop that ``--loop`` names, with the choices and default of
``relay serve --loop``:
``python -m bench.producer_ceiling --config relay.yaml --targets FILE ...``
writes one JSON document with every send's start, latency and outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from relay.config import KafkaConfig, RelayConfig, load_config
from relay.delivery import producer_settings
from relay.envelope import parse_envelope
from relay.event_loop import LOOP_CHOICES, event_loop_factory
from relay.kafka_security import kafka_client_kwargs
from relay.routing import Record, route_event
from relay.sources import SourceTable

# Distinct records to cycle through: enough to vary topics, keys and sizes,
# few enough that holding them does not inflate the process's peak RSS.
RECORD_POOL_SIZE = 2000
WARMUP_SENDS = 500


def relay_producer(config: KafkaConfig) -> AIOKafkaProducer:
    """Return a producer with the settings of relay/delivery.py ``Publisher``."""
    client = {**kafka_client_kwargs(config), "client_id": f"{config.client_id}-ceiling"}
    return AIOKafkaProducer(**client, **producer_settings(config))


def load_records(config: RelayConfig, targets: Path, topic_prefix: str) -> list[Record]:
    """Route the first ``RECORD_POOL_SIZE`` bodies of a vegeta target file as the relay would."""
    source = next(iter(SourceTable(config.sources)))
    routing = config.routing.model_copy(update={"topic_prefix": topic_prefix})
    received_at = datetime.now(UTC)
    records: list[Record] = []
    with open(targets, "rb") as lines:
        for line in itertools.islice(lines, RECORD_POOL_SIZE):
            body = base64.b64decode(orjson.loads(line)["body"])
            routed = route_event(parse_envelope(body), body, source, routing, received_at)
            records.extend(routed.records)
    return records


class Recorder:
    """Sends records one at a time and keeps each send's start, latency and outcome."""

    def __init__(self, producer: AIOKafkaProducer, records: list[Record]) -> None:
        self._producer = producer
        self._records: Iterator[Record] = itertools.cycle(records)
        self.samples: list[tuple[int, int, int]] = []

    async def send_one(self) -> None:
        record = next(self._records)
        started = time.time_ns()
        clock = time.perf_counter_ns()
        try:
            future = await self._producer.send(
                record.topic, value=record.value, key=record.key, headers=list(record.headers)
            )
            await future
            status = 200
        except KafkaError:
            status = 0
        self.samples.append((started, time.perf_counter_ns() - clock, status))


async def saturate(recorder: Recorder, concurrency: int, duration_s: float) -> None:
    """Run ``concurrency`` send-and-wait loops for ``duration_s`` seconds."""
    deadline = time.monotonic() + duration_s

    async def loop() -> None:
        while time.monotonic() < deadline:
            await recorder.send_one()

    await asyncio.gather(*(loop() for _ in range(concurrency)))


async def pace(recorder: Recorder, rate_per_s: int, duration_s: float) -> None:
    """Start one send every ``1 / rate_per_s`` seconds, not waiting for earlier ones."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    for index in range(int(rate_per_s * duration_s)):
        delay = start + index / rate_per_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(recorder.send_one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(args.config)
    records = load_records(config, args.targets, args.topic_prefix)
    producer = relay_producer(config.kafka)
    await producer.start()
    try:
        warmup = Recorder(producer, records)
        await asyncio.gather(*(warmup.send_one() for _ in range(WARMUP_SENDS)))

        recorder = Recorder(producer, records)
        cpu_before = time.process_time()
        if args.rate:
            await pace(recorder, args.rate, args.duration)
        else:
            await saturate(recorder, args.concurrency, args.duration)
        cpu_s = time.process_time() - cpu_before
    finally:
        await producer.stop()
    return {
        "cpu_s": cpu_s,
        "peak_rss_bytes": _own_peak_rss_bytes(),
        "event_loop": running_loop_name(),
        "samples": recorder.samples,
    }


def running_loop_name() -> str:
    """Return the package of the running event loop's class: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def _own_peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="relay YAML configuration")
    parser.add_argument("--targets", type=Path, required=True, help="vegeta JSON target file")
    parser.add_argument("--topic-prefix", required=True, help="prefix of the topics written")
    parser.add_argument("--duration", type=float, required=True, help="run time in seconds")
    parser.add_argument("--rate", type=int, default=0, help="sends per second; 0 saturates")
    parser.add_argument("--concurrency", type=int, default=64, help="send loops at saturation")
    parser.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop, as relay serve --loop (default: auto)",
    )
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    with asyncio.Runner(loop_factory=event_loop_factory(args.loop)) as runner:
        result = runner.run(run(args))
    args.output.write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
