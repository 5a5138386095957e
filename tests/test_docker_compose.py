"""docker-compose.yml: addresses and ports that must agree across its services.

Docker is not needed: the checks read the file. They catch the mistakes that
only show once the stack runs, such as a client pointed at a listener the
broker does not advertise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def services() -> dict[str, Any]:
    document = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    result: dict[str, Any] = document["services"]
    return result


def advertised_addresses() -> set[str]:
    listeners = services()["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    return {listener.split("://", 1)[1] for listener in listeners.split(",")}


def test_clients_use_advertised_listener() -> None:
    all_services = services()
    relay_bootstrap = all_services["relay"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    ui_bootstrap = all_services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"]

    assert relay_bootstrap in advertised_addresses()
    assert ui_bootstrap in advertised_addresses()


def test_host_ports_distinct_and_loopback() -> None:
    published = [port for service in services().values() for port in service.get("ports", [])]
    host_ports = [port.rsplit(":", 1)[0] for port in published]

    assert len(set(host_ports)) == len(host_ports)
    for host_port in host_ports:
        assert host_port.startswith("127.0.0.1:"), f"{host_port} is reachable from other hosts"


def test_ui_waits_for_healthy_kafka() -> None:
    ui = services()["kafka-ui"]

    assert ui["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert ui["image"].rsplit(":", 1)[1] != "latest"
