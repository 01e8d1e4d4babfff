"""Fuzzing: >= 100,000 hostile inputs across every profile; decode never raises, never half-decodes."""

from __future__ import annotations

import base64
import json
import math
import random
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles import REASONS, DecodeError, ProfileSet, Reading
from device_profiles.samples import sample_payloads
from tests.device_profiles.conftest import RECEIVED, VALID
from tests.device_profiles.test_docs import worked_example_dir

MUTATIONS = 100_000
NASTY: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    3,
    99,
    255,
    256,
    65536,
    -(2**31),
    2**53 + 1,
    10**30,
    1e308,
    -1e308,
    1.5,
    -0.0,
    3.2,
    "",
    "x",
    "0",
    "861234567890123",
    "A84041000181C0DE",
    "\u00e9\u0000",
    [],
    [1],
    {},
    {"a": 1},
    "2025-11-22T05:00:00Z",
    "2025-11-22T05:00:00",
    "not a time",
    "AAAA",
    "////",
    "=",
    "qg==",
]


def check_result(result: Reading | DecodeError, topic: str) -> None:
    """A result is a whole, valid reading or a known reason code: never anything in between."""
    if isinstance(result, DecodeError):
        assert result.reason in REASONS, result
        assert result.topic == topic
        assert isinstance(result.message, str)
        assert result.message
        return
    assert isinstance(result, Reading)
    assert result.device_id
    assert result.profile
    assert result.reading_id
    assert result.ts.tzinfo is UTC
    assert result.received_at == RECEIVED
    assert all(type(v) is float and math.isfinite(v) for v in result.metrics.values()), result.metrics
    assert list(result.quality) == sorted(set(result.quality))
    assert list(result.events) == sorted(set(result.events))


def _json_mutation(rng: random.Random, payload: bytes) -> bytes | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    node: Any = doc
    for _ in range(rng.randint(1, 3)):  # walk down a little, then replace or delete a key
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if isinstance(node[key], dict | list) and node[key] and rng.random() < 0.5:
                node = node[key]
                continue
            if rng.random() < 0.2:
                del node[key]
            else:
                node[key] = rng.choice(NASTY)
            break
        if isinstance(node, list) and node:
            index = rng.randrange(len(node))
            node[index] = rng.choice(NASTY)
            break
    if rng.random() < 0.1 and "data" in doc:
        doc["data"] = base64.b64encode(rng.randbytes(rng.randint(0, 16))).decode()
    return json.dumps(doc).encode()


def mutate(rng: random.Random, payload: bytes) -> bytes:
    choice = rng.randrange(9)
    if choice <= 2:
        mutated = _json_mutation(rng, payload)
        if mutated is not None:
            return mutated
    buf = bytearray(payload)
    if not buf:
        return rng.randbytes(rng.randint(0, 64))
    i = rng.randrange(len(buf))
    if choice == 3:
        buf[i] ^= 1 << rng.randrange(8)
    elif choice == 4:
        buf[i] = rng.randrange(256)
    elif choice == 5:
        del buf[i : i + rng.randint(1, 16)]
    elif choice == 6:
        buf[i:i] = rng.choice([b"[", b"{", b'"', b"\\", b"\xff", b"NaN", b"1e999", b"null", b",", b"]}"])
    elif choice == 7:
        return bytes(buf[: rng.randrange(len(buf))])
    else:
        return rng.randbytes(rng.randint(0, 64))
    return bytes(buf)


@pytest.fixture(scope="module")
def corpus(
    profiles: ProfileSet, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ProfileSet, list[tuple[str, bytes]]]:
    """Every shipped profile plus the docs' hex example, and valid messages of each."""
    example = worked_example_dir(Path(tmp_path_factory.mktemp("profiles")))
    from device_profiles.loader import SHIPPED_DIR

    everything = ProfileSet.load(SHIPPED_DIR, example)
    rng = random.Random(20251122)
    seeds = list(VALID.values())
    for profile in everything.profiles.values():
        if profile.id == "acme/wl200":
            seeds += [("acme/wl200/WL000042/data", b"a0252169810000e03e4c9f00")]
            continue
        seeds += sample_payloads(profile, everything.encode, rng, 20)
    return everything, seeds


def test_mutation_fuzz(corpus: tuple[ProfileSet, list[tuple[str, bytes]]]) -> None:
    profiles, seeds = corpus
    odd_topics = ["zigbee2mqtt", "nbiot//up", "application/x/device/y/event/up", ""]
    topics = [*sorted({t for t, _ in seeds}), *odd_topics]
    rng = random.Random(7)
    reasons: Counter[str] = Counter()
    decoded: Counter[str] = Counter()
    for n in range(MUTATIONS):
        topic, payload = seeds[rng.randrange(len(seeds))]
        if n % 10 == 0:
            topic = rng.choice(topics)  # a payload on a topic of another dialect
        payload = mutate(rng, payload)
        if n % 3 == 0:
            payload = mutate(rng, payload)
        result = profiles.decode(topic, payload, RECEIVED)
        check_result(result, topic)
        if isinstance(result, DecodeError):
            reasons[result.reason] += 1
        else:
            decoded[result.profile] += 1
    # The fuzz reached deep into every profile, and most reason codes came up.
    assert set(decoded) == set(profiles.profiles), decoded
    assert len(reasons) >= 12, reasons
    assert sum(decoded.values()) > MUTATIONS // 20, decoded


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "contact",
        "action",
        "battery",
        "linkquality",
        "fPort",
        "data",
        "time",
        "deviceInfo",
        "deduplicationId",
        "rxInfo",
        "imei",
        "ts",
        "type",
        "bat",
        "csq",
    ]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    topic=st.sampled_from([*sorted({t for t, _ in VALID.values()}), "zigbee2mqtt/x", "nbiot/1/up"]),
    payload=st.binary(max_size=256)
    | st.dictionaries(KEYS, JSON, max_size=8).map(lambda d: json.dumps(d).encode())
    | st.tuples(st.sampled_from(sorted(VALID)), st.dictionaries(KEYS, JSON, max_size=3)).map(
        lambda pair: json.dumps({**json.loads(VALID[pair[0]][1]), **pair[1]}).encode()
    ),
)
def test_hypothesis_fuzz(profiles: ProfileSet, topic: str, payload: bytes) -> None:
    check_result(profiles.decode(topic, payload, RECEIVED), topic)
