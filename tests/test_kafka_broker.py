"""The test broker itself: aiokafka produces, consumes and runs idempotently against it."""

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests import kafka_broker
from tests.kafka_broker import free_port
from tests.kafka_records import consume


async def test_idempotent_producer_round_trip(kafka_bootstrap: str) -> None:
    topic = f"broker-check-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            topic, b"value-1", key=b"key-1", headers=[("h", b"v")]
        )
        await producer.send_and_wait(topic, b"value-2", key=b"key-1")
    finally:
        await producer.stop()
    assert metadata.offset == 0

    records = await consume(kafka_bootstrap, [topic], count=2)
    assert [record.value for record in records] == [b"value-1", b"value-2"]
    assert records[0].key == b"key-1"
    assert list(records[0].headers) == [("h", b"v")]


def listening_socket() -> socket.socket:
    """Return a socket that holds a free loopback port, so a broker cannot bind it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def test_broker_replaces_taken_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = listening_socket()
    taken_port = holder.getsockname()[1]
    ports = iter([taken_port])
    # The first port picked is held by the socket above. Later ones are free.
    monkeypatch.setattr(kafka_broker, "free_port", lambda: next(ports, None) or free_port())

    broker = kafka_broker.KafkaBroker(tmp_path)
    try:
        broker.start()
        assert broker.port != taken_port
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5):
            pass
        assert "Socket server failed to bind" in broker.log_file.read_text()
    finally:
        broker.stop()
        holder.close()


def test_broker_keeps_requested_port(tmp_path: Path) -> None:
    holder = listening_socket()
    broker = kafka_broker.KafkaBroker(tmp_path, port=holder.getsockname()[1])
    try:
        with pytest.raises(RuntimeError, match="exited with"):
            broker.start()
    finally:
        broker.stop()
        holder.close()


def test_thread_check_sees_stopped_process() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not kafka_broker._all_threads_stopped(process.pid)
        process.send_signal(signal.SIGSTOP)
        for _ in range(500):
            if kafka_broker._all_threads_stopped(process.pid):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the stopped process never showed as stopped")
        process.send_signal(signal.SIGCONT)
        for _ in range(500):
            if not kafka_broker._all_threads_stopped(process.pid):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the resumed process still showed as stopped")
    finally:
        process.kill()
        process.wait()
