"""The link emulator's configuration: which trace, which users listen where, and their edge and share.

Shares and associations start from here; the controller changes them at run time (assignments.py, control.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linkemu.proxy import MAX_CONNECTIONS
from tandem.addresses import ADDRESS_PATTERN, HOST_PATTERN, split_address
from tandem.pacing import check_dilation
from tandem.shares import check_shares
from tandem.tls import TlsSettings

__all__ = ["ADDRESS_PATTERN", "EdgeTarget", "LinkEmuConfig", "UserLink", "split_address"]


class EdgeTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, description="the edge's index in the trace")
    address: str = Field(pattern=ADDRESS_PATTERN, description="the edge server's gRPC address HOST:PORT")


class UserLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: int = Field(ge=0, description="the user's index in the trace")
    listen: str = Field(default="127.0.0.1:0", pattern=ADDRESS_PATTERN, description="where this user's device "
                        "connects (port 0: any free port, printed on start)")
    edge: int = Field(ge=0, description="index of the edge the user is associated with")
    share: float = Field(gt=0, le=1, allow_inf_nan=False, description="the user's share of the edge's bandwidth")


class LinkEmuConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trace: Path
    edges: list[EdgeTarget] = Field(min_length=1)
    users: list[UserLink] = Field(min_length=1)
    base_delay_ms: float = Field(default=5.0, ge=0, le=10_000, allow_inf_nan=False,
                                 description="one-way propagation/core delay added to every byte")
    outage_limit_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False,
                                  description="an outage longer than this while bytes wait breaks the connection")
    speedup: float = Field(default=1.0, gt=0, le=1000, allow_inf_nan=False,
                           description="trace slots advance this many times faster than real time")
    dilation: float = Field(default=0.0, ge=0, le=10_000, allow_inf_nan=False, description="time dilation D "
                            "(hardware pacing, tandem/pacing.py): rates / D, delays, outage limit and slot lengths x "
                            "D; 0 = off")
    start_slot: int = Field(default=0, ge=0)
    max_connections: int = Field(default=MAX_CONNECTIONS, ge=1, le=1024, description="concurrent TCP connections "
                                 "per user port (each buffers up to 1 MiB per direction); more are closed at once")
    loop: bool = Field(default=True, description="replay the trace from the start when it ends (else hold the "
                                                 "last slot)")
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", pattern=HOST_PATTERN, description="where the metrics endpoint "
                              "binds (0.0.0.0 in a container, for a Prometheus on another host)")
    control_listen: str | None = Field(default=None, pattern=ADDRESS_PATTERN, description="where the controller "
                                       "reaches the LinkControl gRPC service (port 0: any free port; default off)")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="credentials of the control service (the "
                             "shaping proxies carry the devices' TLS bytes unchanged)")

    @property
    def time_stretch(self) -> float:
        """How many real seconds one emulated second lasts (D, or 1 without dilation)."""
        return self.dilation if self.dilation > 0 else 1.0

    @model_validator(mode="after")
    def _consistent(self) -> "LinkEmuConfig":
        check_dilation(self.dilation)
        edge_indices = Counter(edge.index for edge in self.edges)
        if duplicated := [i for i, n in edge_indices.items() if n > 1]:
            raise ValueError(f"edge index listed twice: {duplicated}")
        user_indices = Counter(user.user for user in self.users)
        if duplicated := [i for i, n in user_indices.items() if n > 1]:
            raise ValueError(f"user listed twice: {duplicated}")
        listens = Counter(user.listen for user in self.users if not user.listen.endswith(":0"))
        if duplicated := [a for a, n in listens.items() if n > 1]:
            raise ValueError(f"two users listen on {duplicated[0]}")
        check_shares(((user.user, user.edge, user.share) for user in self.users), edge_indices, "listed in `edges`")
        return self

    def check_against(self, num_users: int, num_edges: int, num_slots: int) -> None:
        """The trace's dimensions bound the indices; ValueError naming the first that is out of range."""
        for edge in self.edges:
            if edge.index >= num_edges:
                raise ValueError(f"edge {edge.index} is not in the trace (it has {num_edges} edges)")
        for user in self.users:
            if user.user >= num_users:
                raise ValueError(f"user {user.user} is not in the trace (it has {num_users} users)")
        if self.start_slot >= num_slots:
            raise ValueError(f"start_slot {self.start_slot} is past the trace's end ({num_slots} slots)")
