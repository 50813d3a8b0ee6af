"""The readiness line: how a daemon tells whoever started it that it serves, and where.

Every daemon (edge server, link emulator, controller, device fleet) prints, once everything it serves is up, one
line on stdout:

    TANDEM-READY {"daemon": "edge", "address": "127.0.0.1:50051", "metrics_port": 9100}

``daemon`` names the kind; the other keys are the endpoints it bound (ports chosen by the OS when asked for 0):
``address`` (its gRPC service), ``metrics_port`` (Prometheus, or null), ``control`` (linkemu's LinkControl),
``users`` (linkemu: user id -> the address its device dials).  Orchestrators (tandem/processes.py, docker
compose health checks via gRPC health) read this line, not the human-readable ones around it, so the wording of
those may change freely.  The line is documented in docs/testbed.md.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "TANDEM-READY "


def announce_ready(daemon: str, **endpoints: Any) -> None:
    print(PREFIX + json.dumps({"daemon": daemon, **endpoints}, sort_keys=True), flush=True)


def parse_ready(line: str) -> dict[str, Any] | None:
    """The endpoints announced on ``line``, or None when it is not a readiness line."""
    if not line.startswith(PREFIX):
        return None
    try:
        announced = json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None
    return announced if isinstance(announced, dict) and "daemon" in announced else None
