"""The pieces the demo and `linli bench e2e` are built from: configuration files the real commands
accept, the /metrics parser, and a small run of the benchmark (figures not judged, only sanity)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.demo.app import parse_metrics
from simulators.demo.configs import ACCELERATED_SKEW_BOUND_S, toml_text, write_cloud_config, write_edge_config


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def test_edge_and_cloud_accept_the_written_configurations(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    done = _run(
        "device_profiles.console", "sim", "--devices", "5", "--count", "1", "--output", str(tmp_path / "m"),
        "--inventory", str(inventory), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    edge = write_edge_config(
        tmp_path / "edge.toml",
        gateway_id="g1",
        community_id="c1",
        inventory=inventory,
        field_url="mqtt://127.0.0.1:1883",
        cloud_url="mqtt://127.0.0.1:1884",
        buffer=tmp_path / "buffer.db",
        http_address="127.0.0.1:0",
        overrides={"uplink": {"batch_max_readings": 100}},
    )
    text = edge.read_text()
    assert f"max_clock_skew_s = {ACCELERATED_SKEW_BOUND_S!r}" in text
    assert "batch_max_readings = 100" in text
    checked = _run("edge", "check-config", "--config", str(edge))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    cloud = write_cloud_config(
        tmp_path / "cloud.toml",
        database_url="postgresql://u@127.0.0.1:5432/d",
        mqtt_url="mqtt://127.0.0.1:1884",
    )
    checked = _run("cloud", "cloud", "check-config", "--config", str(cloud))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_toml_text_quotes_strings_and_refuses_other_types() -> None:
    assert toml_text({"a": 'x"y', "t": {"n": 1, "f": 0.5, "b": True, "l": ["p", 2]}}) == (
        'a = "x\\"y"\n\n[t]\nn = 1\nf = 0.5\nb = true\nl = ["p", 2]\n'
    )
    with pytest.raises(TypeError):
        toml_text({"a": object()})


def test_parse_metrics_reads_unlabelled_samples() -> None:
    text = (
        "# HELP linli_edge_buffer_depth x\n# TYPE linli_edge_buffer_depth gauge\n"
        "linli_edge_buffer_depth 42.0\n"
        'linli_edge_other{label="x"} 3\nlinli_edge_messages_received_total 1e3\n'
    )
    assert parse_metrics(text) == {
        "linli_edge_buffer_depth": 42.0,
        "linli_edge_messages_received_total": 1000.0,
    }


@pytest.mark.integration
@pytest.mark.slow
def test_bench_e2e_small_run_commits_everything() -> None:
    done = _run(
        "device_profiles.console", "bench", "e2e", "--json", "--devices", "200", "--messages", "3000",
        "--live-messages", "2000", "--latency-rate", "200", "--latency-seconds", "3", timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["not_committed"] == 0
    assert figures["devices"] == 200
    assert figures["backlog_messages"] == 3000
    assert figures["readings_per_s"] > 0
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
