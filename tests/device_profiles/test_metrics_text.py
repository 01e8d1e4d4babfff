"""The /metrics text format, read back by the Prometheus client library's own parser."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from device_profiles.metrics_text import exposition


def test_counters_and_gauges_parse_as_prometheus_reads_them() -> None:
    text = exposition(
        prefix="linli_edge_",
        help_prefix="linli edge agent: ",
        counters={"evicted": 12, "unknown_device_messages_total": 3},
        gauges={"buffer_depth": 1_000_000, "cpu_percent": 12.5, "odd": math.inf},
    ).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == {
        "linli_edge_evicted": "counter",
        "linli_edge_unknown_device_messages": "counter",
        "linli_edge_buffer_depth": "gauge",
        "linli_edge_cpu_percent": "gauge",
        "linli_edge_odd": "gauge",
    }
    samples = {s.name: s.value for f in families.values() for s in f.samples}
    assert samples == {
        "linli_edge_evicted_total": 12.0,
        "linli_edge_unknown_device_messages_total": 3.0,
        "linli_edge_buffer_depth": 1_000_000.0,
        "linli_edge_cpu_percent": 12.5,
        "linli_edge_odd": math.inf,
    }
    assert families["linli_edge_buffer_depth"].documentation == "linli edge agent: buffer depth"


def test_nothing_to_report_is_an_empty_body() -> None:
    assert exposition(prefix="p_", help_prefix="", counters={}, gauges={}) == b""
