"""Time from an SOS publish on the field broker to its arrival at the cloud broker, right after a
cloud outage ends (docs/benchmarks.md, "Alarms after a cloud outage").

Each trial: private field and cloud brokers on loopback, the agent as a subprocess with the
default reconnect settings, the cloud broker stopped for ``--outage-s`` seconds and started again,
a subscriber connected to it, then one SOS press published; the figure is the subscriber's
arrival time minus the publish time. A measurement, not a test: it prints JSON.

    .venv/bin/python scripts/alarm_after_outage.py --trials 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.services import MosquittoBroker  # noqa: E402
from tests.edge.conftest import AgentProcess, Collector, Fleet, Publisher, write_config  # noqa: E402

SOS = "generic_lorawan/sos_button"
DOOR = "generic_lorawan/door_contact"


def trial(workdir: Path, *, outage_s: float, cloud: dict[str, object]) -> float:
    fleet = Fleet({DOOR: 5, SOS: 1})
    field = MosquittoBroker(workdir=workdir / "field")
    broker = MosquittoBroker(workdir=workdir / "cloud")
    field.start()
    broker.start()
    agent = AgentProcess(config=workdir / "edge.toml", log=workdir / "agent.log")
    pub: Publisher | None = None
    collectors: list[Collector] = []
    try:
        write_config(
            agent.config,
            inventory=fleet.inventory(workdir / "inventory.yaml"),
            field=field,
            cloud=broker,
            buffer=workdir / "buffer.db",
            sections={"cloud": cloud},
        )
        agent.start()
        agent.wait_log("subscribed")
        agent.wait_log("connected", count=2)  # field and cloud
        pub = Publisher(field)
        broker.stop()
        agent.wait_log("connection_lost")
        time.sleep(outage_s)  # the outage itself
        broker.start()
        col = Collector(broker)  # subscribed once this returns
        collectors.append(col)
        topic, payload, sos = fleet.payload(fleet.of(SOS)[0], events=("sos_pressed",))
        pressed = time.monotonic()
        pub.publish(topic, payload)
        if not col.wait_for(lambda c: sos.reading_id in c.reading_ids(), 120):
            raise SystemExit(f"the SOS did not arrive in 120 s; agent log: {agent.log}")
        with col.lock:
            index = next(
                i
                for i, e in enumerate(col.envelopes)
                if any(r.reading_id == sos.reading_id for r in e.readings)
            )
            return col.arrivals[index] - pressed
    finally:
        for c in collectors:
            c.close()
        if pub is not None:
            pub.close()
        agent.stop()
        field.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--outage-s", type=float, default=11.0)
    parser.add_argument("--backoff-base-s", type=float, default=0.5)
    parser.add_argument("--backoff-cap-s", type=float, default=60.0)
    args = parser.parse_args()
    cloud = {"backoff_base_s": args.backoff_base_s, "backoff_cap_s": args.backoff_cap_s}
    latencies = []
    for i in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="linli-alarm-outage-") as tmp:
            latency = trial(Path(tmp), outage_s=args.outage_s, cloud=cloud)
        latencies.append(latency)
        print(f"trial {i + 1}: {latency * 1000:.0f} ms", file=sys.stderr, flush=True)
    latencies.sort()
    print(
        json.dumps(
            {
                "trials": len(latencies),
                "outage_s": args.outage_s,
                "sos_after_outage_min_ms": round(latencies[0] * 1000, 1),
                "sos_after_outage_median_ms": round(latencies[len(latencies) // 2] * 1000, 1),
                "sos_after_outage_max_ms": round(latencies[-1] * 1000, 1),
                "sos_after_outage_ms": [round(x * 1000, 1) for x in latencies],
            }
        )
    )


if __name__ == "__main__":
    main()
