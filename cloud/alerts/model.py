"""Values the alert service passes around (msgspec structs: immutable, cheap to decode)."""

from __future__ import annotations

import msgspec


class GatewayObservation(msgspec.Struct, frozen=True):
    """One gateway status document the ingest received (``at_us``: its arrival, Unix us)."""

    community_id: str
    gateway_id: str
    state: str
    at_us: int
