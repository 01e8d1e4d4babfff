"""``linli alerts explain``: a device's stored history replayed through one rule, against a real
database filled by the ingest's writer."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud.alerts.explain import explain
from cloud.config import build_settings
from cloud.errors import AlertRuleError, DeviceNotFound
from cloud.ingest.envelope import decode
from cloud.store.writer import BatchWriter
from tests.cloud.conftest import R, envelope, up_topic

pytestmark = pytest.mark.integration

S = 1_000_000
#: 2025-06-01 14:00 UTC = 22:00 in Shanghai: the lamps are on
NIGHT = int(datetime(2025, 6, 1, 14, tzinfo=UTC).timestamp()) * S
LAMP = "861234567890123"


def lamp(i: int, power: float) -> R:
    return R(
        LAMP,
        NIGHT + i * 900 * S,
        {"lamp_on": 1, "dim_pct": 100, "power_w": power, "voltage_v": 220},
        device_type="streetlight",
        profile="generic_nbiot/streetlight",
    )


def test_explain_prints_when_the_rule_fired_and_cleared_and_why(migrated_url: str, tmp_path: Path) -> None:
    # an hour of a dead lamp (no power), then the lamp repaired
    readings = [lamp(i, 0.0) for i in range(5)] + [lamp(i, 95.0) for i in range(5, 8)]
    writer = BatchWriter(database_url=migrated_url)
    writer.write([decode(up_topic(), envelope(readings, batch_seq=1))])
    writer.close()
    settings = build_settings({"database_url": migrated_url})
    lines = list(
        explain(
            settings,
            rule_id="lamp_failure",
            device_id=LAMP,
            start=datetime(2025, 6, 1, 13, tzinfo=UTC),
            end=datetime(2025, 6, 1, 18, tzinfo=UTC),
        )
    )
    text = "\n".join(lines)
    assert lines[0].startswith("rule lamp_failure: composite: lamp_on == 1 and dim_pct >= 10 and power_w < 5")
    assert "8 stored readings" in lines[1]
    fired = [line for line in lines if " FIRED lamp_failure " in line]
    cleared = [line for line in lines if " cleared lamp_failure " in line]
    assert len(fired) == 1
    assert len(cleared) == 1
    assert fired[0].startswith("2025-06-01T14:10:00Z")  # held 10 min: the clock, not a reading, fires it
    assert "(since 2025-06-01T14:00:00Z)" in fired[0]
    assert cleared[0].startswith("2025-06-01T15:15:00Z")  # the first reading with power again
    assert f"because 2025-06-01T14:00:00Z {LAMP} condition began" in text
    assert lines[-1] == "fired 1, repeated 0, cleared 1"

    with pytest.raises(AlertRuleError, match="no such rule"):
        list(
            explain(
                settings,
                rule_id="nope",
                device_id=LAMP,
                start=datetime(2025, 6, 1, tzinfo=UTC),
                end=datetime(2025, 6, 2, tzinfo=UTC),
            )
        )
    with pytest.raises(DeviceNotFound):
        list(
            explain(
                settings,
                rule_id="lamp_failure",
                device_id="ghost",
                start=datetime(2025, 6, 1, tzinfo=UTC),
                end=datetime(2025, 6, 2, tzinfo=UTC),
            )
        )

    config = tmp_path / "cloud.toml"
    config.write_text(f'database_url = "{migrated_url}"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "alerts",
            "explain",
            "--config",
            str(config),
            "--rule",
            "lamp_failure",
            "--device",
            LAMP,
            "--from",
            "2025-06-01T13:00Z",
            "--to",
            "2025-06-01T18:00Z",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == lines
