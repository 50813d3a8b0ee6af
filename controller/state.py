"""What the controller keeps across a restart (even a kill -9): topology, active policy, latest decision.

One SQLite file (standard library ``sqlite3``), one small key/value table; each write is its own transaction, so
a killed controller finds the last complete write.  Stored values are JSON and validated when read back, so a
damaged or foreign file is refused with a clear error instead of steering the system.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import ValidationError

from controller.config import PolicySpec
from controller.policies.base import Allocation, Decision


class StateError(Exception):
    pass


@dataclass(frozen=True)
class VersionedDecision:
    version: int
    decided_at: float  # unix time
    decision: Decision


class ControllerState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.DatabaseError as error:
            raise StateError(f"cannot use {path} as the controller's state: {error}") from None
        self.path = path

    def _put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def _get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def save_topology(self, topology_json: str) -> None:
        self._put("topology", topology_json)

    def load_topology(self) -> dict | None:
        value = self._get("topology")
        return None if value is None else self._json("topology", value)

    def save_policy(self, policy: PolicySpec) -> None:
        self._put("policy", policy.model_dump_json())

    def load_policy(self) -> PolicySpec | None:
        value = self._get("policy")
        if value is None:
            return None
        try:
            return PolicySpec.model_validate(self._json("policy", value))
        except ValidationError as error:
            raise StateError(f"{self.path}: the stored policy is invalid: {error}") from None

    def save_decision(self, decision: VersionedDecision) -> None:
        self._put("decision", json.dumps({
            "version": decision.version, "decided_at": decision.decided_at, "slot": decision.decision.slot,
            "allocations": [asdict(a) for a in decision.decision.allocations]}))

    def load_decision(self) -> VersionedDecision | None:
        value = self._get("decision")
        if value is None:
            return None
        data = self._json("decision", value)
        try:
            allocations = tuple(Allocation(int(a["user"]), int(a["edge"]), float(a["bandwidth_share"]),
                                           float(a["compute_share"]), int(a["draft_length"]))
                                for a in data["allocations"])
            return VersionedDecision(int(data["version"]), float(data["decided_at"]),
                                     Decision(int(data["slot"]), allocations))
        except (KeyError, TypeError, ValueError) as error:
            raise StateError(f"{self.path}: the stored decision is invalid: {error!r}") from None

    def _json(self, key: str, value: str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise StateError(f"{self.path}: the stored {key} is not JSON: {error}") from None

    def close(self) -> None:
        self._db.close()
