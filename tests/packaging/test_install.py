"""The gateway's install: `linli edge ...` loads gateway code only, and the base requirements of
the built distribution leave the cloud's and the simulators' packages out."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from device_profiles.console import MissingExtra, main
from device_profiles.inventory import Device, Inventory, Location

ROOT = Path(__file__).resolve().parents[2]
#: Top-level modules a gateway never needs: the cloud's and the simulators' code and libraries.
NOT_ON_A_GATEWAY = {"numpy", "psycopg", "psycopg_pool", "fastapi", "uvicorn", "rich", "cloud", "simulators"}
#: Distributions the base install must not pull in.
NOT_IN_BASE = {"psycopg", "numpy", "fastapi", "uvicorn", "rich", "aiomqtt", "psutil"}

# Runs the command line in a fresh interpreter, then prints the top-level modules it imported.
_PROBE = """
import json, sys
from device_profiles.console import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "modules": sorted({m.partition(".")[0] for m in sys.modules})}))
"""


def _imported_by(*args: str) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60, check=False
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["status"], set(result["modules"])


def _edge_config(tmp_path: Path) -> Path:
    Inventory(
        [
            Device(
                device_id="0x00158d0001a2b3c4",
                device_type="door_contact",
                profile="aqara/mccgq11lm",
                community_id="c-test",
                gateway_id="gw-test",
                location=Location(lat=31.23, lon=121.47),
            )
        ]
    ).dump(tmp_path / "inventory.json")
    config = tmp_path / "edge.toml"
    config.write_text(
        'gateway_id = "gw-test"\ncommunity_id = "c-test"\ninventory = "inventory.json"\n'
        '[field]\nurl = "mqtt://127.0.0.1:1883"\n[cloud]\nurl = "mqtt://127.0.0.1:1884"\n'
        f'[buffer]\npath = "{tmp_path / "buffer.db"}"\n'
    )
    return config


def test_edge_run_help_loads_no_cloud_or_simulator_code() -> None:
    status, modules = _imported_by("edge", "run", "--help")
    assert status == 0
    assert "edge" in modules
    assert modules & NOT_ON_A_GATEWAY == set()


def test_edge_check_config_loads_no_cloud_or_simulator_code(tmp_path: Path) -> None:
    status, modules = _imported_by("edge", "check-config", "--config", str(_edge_config(tmp_path)))
    assert status == 0
    assert {"edge", "pydantic"} <= modules
    assert modules & NOT_ON_A_GATEWAY == set()


def test_root_help_lists_every_command_without_loading_one() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    for name in ("bench", "cloud", "db", "demo", "edge", "profiles", "sim"):
        assert name in done.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    # Each command's one-line help, read from its module's docstring, not by importing it.
    assert "run the agent, check a configuration" in done.stdout
    assert "apply the schema migrations" in done.stdout
    modules = set(json.loads(done.stdout.strip().splitlines()[-1])["modules"])
    assert modules & ({"edge"} | NOT_ON_A_GATEWAY) == set()


def test_a_bench_loads_only_its_own_module() -> None:
    status, modules = _imported_by("bench", "profiles", "--help")
    assert status == 0
    assert modules & ({"edge"} | NOT_ON_A_GATEWAY) == set()


def test_a_missing_extra_names_the_pip_install_line() -> None:
    from device_profiles import console

    hint = console._missing(ModuleNotFoundError("No module named 'psycopg'", name="psycopg"), "db migrate")
    assert isinstance(hint, MissingExtra)
    assert (hint.module, hint.extra) == ("psycopg", "cloud")
    assert "pip install 'linli[cloud]'" in str(hint)
    hint = console._missing(ModuleNotFoundError(name="numpy.random"), "sim")
    assert isinstance(hint, MissingExtra)
    assert hint.extra == "sim"
    # A module no extra brings is a bug or a broken install: raised as it is.
    error = ModuleNotFoundError(name="no_such_module")
    assert console._missing(error, "edge") is error


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel as an installer would: from a copy of the tree (a build writes `build/`
    into its source), in an isolated build environment made from the package index."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    for package in ("edge", "cloud", "device_profiles", "simulators"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("linli-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_base_requirements_leave_cloud_and_simulators_out(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = (n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta).decode()
        names = zf.namelist()
    requires = [
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    base = {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert {"paho-mqtt", "msgspec", "pydantic"} <= base
    assert base & NOT_IN_BASE == set()
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE))
    assert {"cloud", "sim", "dev"} <= extras
    # What the code needs at run time travels in the wheel.
    assert "device_profiles/profiles/aqara/mccgq11lm.yaml" in names
    assert any(n.startswith("cloud/migrations/") and n.endswith(".sql") for n in names)
    assert "simulators/demo/pipeline.py" in names
    assert "cloud/demo/__init__.py" not in names
    # the console: its pages, scripts, styles and the vendored chart library with its licence
    console = Path(__file__).parents[2] / "cloud" / "console"
    for asset in console.glob("[st]*/**/*"):
        if asset.is_file():
            assert asset.relative_to(console.parent.parent).as_posix() in names, asset


@pytest.mark.slow
def test_pip_install_into_an_empty_venv_runs_the_gateway(wheel: Path, tmp_path: Path) -> None:
    """`pip install linli` as a gateway installer runs it: a fresh venv, the package index, the
    built wheel; then `linli edge run --help`, and a command of the extras says what to install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # The test's own pip installs into the new venv (`--python`, pip >= 22.3): no bootstrap needed.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    installed = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert "linli" in installed
    assert installed & (NOT_IN_BASE | {"psycopg-binary", "psycopg-pool", "starlette"}) == set()
    linli = venv / "bin" / "linli"
    run = subprocess.run(
        [str(linli), "edge", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "--config" in run.stdout
    # The end-to-end benchmark's module imports numpy and psycopg: the first one missing is named.
    e2e = subprocess.run(
        [str(linli), "bench", "e2e", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert e2e.returncode == 2
    assert re.search(r"pip install 'linli\[(sim|cloud)\]'", e2e.stderr), e2e.stderr
    assert "Traceback" not in e2e.stderr
