from prometheus_client.parser import text_string_to_metric_families

from relay.metrics import RelayMetrics, event_type_label


def samples(metrics: RelayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def test_event_type_label_is_bounded() -> None:
    assert event_type_label("lead.created") == "lead.created"
    assert event_type_label("lead.exploded") == "other"
    assert event_type_label(None) == "unknown"


def test_counters_rendered_with_labels() -> None:
    metrics = RelayMetrics()
    metrics.deliveries.labels("tasknation", "lead.created", "200").inc()
    metrics.deliveries.labels("tasknation", "lead.created", "200").inc()
    metrics.rejections.labels("tasknation", "signature_mismatch").inc()

    values = samples(metrics)

    key = (
        "relay_deliveries_total",
        (("event_type", "lead.created"), ("source", "tasknation"), ("status", "200")),
    )
    assert values[key] == 2
    rejection = (
        "relay_rejections_total",
        (("reason", "signature_mismatch"), ("source", "tasknation")),
    )
    assert values[rejection] == 1


def test_spool_gauges_read_at_scrape() -> None:
    metrics = RelayMetrics()
    depth = [0]
    metrics.watch_spool(lambda: depth[0], lambda: 12.5)
    depth[0] = 42

    values = samples(metrics)

    assert values[("relay_spool_depth_records", ())] == 42
    assert values[("relay_spool_oldest_age_seconds", ())] == 12.5


def test_registries_are_separate() -> None:
    first = RelayMetrics()
    second = RelayMetrics()
    first.in_flight.inc()
    assert samples(second)[("relay_requests_in_flight", ())] == 0
