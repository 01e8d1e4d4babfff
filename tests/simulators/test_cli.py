"""``linli sim`` end to end: files, identical output for identical options, errors, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from device_profiles.console import main
from device_profiles.inventory import Inventory
from simulators.output import read_messages
from simulators.truth import read_truth

BASE = [
    "sim",
    "--devices",
    "120",
    "--seed",
    "5",
    "--start",
    "2025-06-01T00:00:00Z",
    "--duration",
    "6h",
    "--quiet",
]


def _run(tmp: Path, *extra: str) -> tuple[bytes, bytes, bytes]:
    tmp.mkdir(exist_ok=True)
    args = [
        *BASE,
        "--output",
        str(tmp / "out.jsonl"),
        "--truth",
        str(tmp / "truth.jsonl"),
        "--inventory",
        str(tmp / "inventory.yaml"),
        *extra,
    ]
    assert main(args) == 0
    return (
        (tmp / "out.jsonl").read_bytes(),
        (tmp / "truth.jsonl").read_bytes(),
        (tmp / "inventory.yaml").read_bytes(),
    )


def test_file_output_is_byte_identical_for_identical_options(tmp_path: Path) -> None:
    faults = [
        "--malformed",
        "0.05",
        "--duplicate",
        "0.05",
        "--reordered",
        "0.05",
        "--clock-skew",
        "3",
        "--scenario",
        "sos-press",
        "--scenario",
        "flaky-devices",
    ]
    a = _run(tmp_path / "a", *faults)
    b = _run(tmp_path / "b", *faults)
    c = _run(tmp_path / "c", *faults, "--seed", "6")
    assert a == b
    assert a[0] != c[0]
    assert a[2] != c[2]
    inventory = Inventory.load(tmp_path / "a" / "inventory.yaml")
    assert len(inventory) == 120
    messages = read_messages(tmp_path / "a" / "out.jsonl")
    truth = read_truth(tmp_path / "a" / "truth.jsonl")
    assert len(messages) == sum(1 for r in truth if r["kind"] == "message") > 1000
    assert {r["condition"] for r in truth if r["kind"] == "condition"} >= {"sos_pressed", "device_silent"}


def test_count_and_fleet_file(tmp_path: Path) -> None:
    _run(tmp_path / "a")
    out = tmp_path / "replay.jsonl"
    args = [
        "sim",
        "--fleet",
        str(tmp_path / "a" / "inventory.yaml"),
        "--seed",
        "5",
        "--start",
        "2025-06-01T00:00:00Z",
        "--speed",
        "max",
        "--count",
        "250",
        "--output",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    assert len(read_messages(out)) == 250


def test_summary_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in BASE if a != "--quiet"]
    assert main([*args, "--output", str(tmp_path / "o.jsonl")]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("linli sim: ")
    assert " messages (malformed 0, duplicates 0, reordered 0)" in out.out
    assert "simulated 2025-06-01T00:00:00.000Z .. 2025-06-01T06:00:00.000Z" in out.out
    assert out.err == "", "no progress line when stderr is not a terminal"


def test_list_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--list-scenarios"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [
        "elderly-inactive",
        "flaky-devices",
        "gateway-storm",
        "lamp-failure",
        "manhole-lifted",
        "radio-fading",
        "sos-press",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mix", "door_contact"], "mix"),
        (["--duration", "soon"], "not a duration"),
        (["--scenario", "nope"], "no scenario file or shipped scenario 'nope'"),
        (["--malformed", "1.5"], "malformed: must be a share between 0 and 1"),
        (["--speed", "-3"], "speed: must be positive"),
        (["--broker", "mqtt://x"], "give --output or --broker, not both"),
        (["--fleet", "/nonexistent/fleet.yaml"], "cannot read"),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main([*BASE, "--output", str(tmp_path / "o.jsonl"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_unpaced_file_output_needs_an_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--output", str(tmp_path / "o.jsonl"), "--quiet"]) == 2
    assert "give --duration or --count" in capsys.readouterr().err


def test_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    from simulators.services import free_port

    code = main(
        [
            "sim",
            "--devices",
            "5",
            "--broker",
            f"mqtt://127.0.0.1:{free_port('127.0.0.1')}",
            "--quiet",
            "--count",
            "1",
        ]
    )
    assert code == 1
    assert "cannot connect" in capsys.readouterr().err


def _progress_reader(stream: IO[bytes]) -> tuple[threading.Thread, list[bytes]]:
    """Collects what the progress line draws on `stream` (a pipe, drawn into by TTY_COMPATIBLE)."""
    chunks: list[bytes] = []

    def read() -> None:
        while chunk := os.read(stream.fileno(), 4096):
            chunks.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, chunks


def _sent(chunks: list[bytes]) -> int:
    counts = re.findall(rb"sent ([0-9,]+)", b"".join(chunks))
    return int(counts[-1].replace(b",", b"")) if counts else 0


def test_ctrl_c_stops_cleanly_and_flushes_the_truth(tmp_path: Path) -> None:
    out, truth = tmp_path / "out.jsonl", tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "sim",
            "--devices",
            "300",
            "--speed",
            "600",
            "--start",
            "2025-06-01T00:00:00Z",
            "--output",
            str(out),
            "--truth",
            str(truth),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TTY_COMPATIBLE": "1"},  # the progress line, in the stderr pipe
    )
    assert proc.stderr is not None
    reader, progress = _progress_reader(proc.stderr)
    try:
        # Interrupt a run under way: once the progress line has counted messages sent.
        deadline = time.monotonic() + 30
        while _sent(progress) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sent(progress) >= 20, b"".join(progress)[-2000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()
    stderr = b"".join(progress).decode(errors="replace")
    assert proc.returncode == 130, stderr
    assert "[interrupted]" in stdout.decode()
    records = read_truth(truth)
    assert records[-1]["kind"] == "end"
    assert records[-1]["interrupted"] is True
    messages = [r for r in records if r["kind"] == "message"]
    assert len(messages) >= 20
    assert len(messages) == len(read_messages(out)) == records[-1]["messages"]
