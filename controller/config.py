"""The controller's configuration: the topology it decides over and how it runs (docs/controller.md).

Edge and user ids are the indices of the channel trace the link emulator replays, so that the SINR reports, the
emulator's assignments and the controller's decisions all speak of the same pairs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from controller.policies import RESERVED_PARAMS
from controller.policies.checkpoints import SHIPPED_POLICY_DIR
from controller.share_floor import DEFAULT_SHARE_FLOOR
from tandem.addresses import ADDRESS_PATTERN
from tandem.auth import ADMIN_TOKEN_ENV
from tandem.edge_model import DEFAULT_STEP_TOKENS, EdgeTiming
from tandem.profiles import SHIPPED_PROFILE, EdgeProfile, ProfileError, load_profile
from tandem.tls import TlsSettings


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0, description="the edge's index in the trace")
    address: str = Field(pattern=ADDRESS_PATTERN, description="the edge daemon's gRPC address (EdgeService and "
                         "EdgeControl)")
    bandwidth_hz: float = Field(20e6, gt=0, allow_inf_nan=False, description="B_e: the edge's radio bandwidth")
    compute_scale: float = Field(1.0, gt=0, le=1000, allow_inf_nan=False, description="the edge's speed relative to "
                                 "the profile's edge, as its --compute-scale (2 = twice as fast)")
    step_tokens: int = Field(DEFAULT_STEP_TOKENS, ge=1, le=1 << 16, description="tokens one engine step of the edge "
                             "may batch, as its --step-tokens")
    capacity: int = Field(16, ge=1, description="most users the edge may serve at once")


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0, description="the user's index in the trace")
    draft_length: int = Field(4, ge=1, le=256, description="tokens per drafted block the controller asks for")
    max_draft_length: int | None = Field(None, ge=1, le=256, description="the longest block the user's device "
                                         "drafts, up to which a policy may tune its draft length (default: "
                                         "draft_length)")
    rtt_s: float = Field(0.01, ge=0, le=10, allow_inf_nan=False, description="base round trip of the user's link")


class Assumptions(BaseModel):
    """What the controller assumes of a user until the device reports its own figures, and the bounds of what
    it believes of a report (controller/trust.py)."""

    model_config = ConfigDict(extra="forbid")
    draft_seconds_per_token: float = Field(0.02, gt=0, le=10, allow_inf_nan=False)
    acceptance: float = Field(0.7, ge=0, le=1, allow_inf_nan=False)
    pending_tokens: int = Field(128, ge=0, le=1 << 20, description="also the most a user with no open session on "
                                "any edge may claim to have pending")
    min_draft_seconds_per_token: float = Field(0.005, gt=0, le=10, allow_inf_nan=False, description="the fastest "
                                               "drafting any device is believed to do: set it to the fastest device "
                                               "of the deployment's hardware profile")
    min_acceptance: float = Field(0.2, ge=0, le=1, allow_inf_nan=False, description="the lowest acceptance a report "
                                  "is believed before the edges have observed the user's drafts")

    @model_validator(mode="after")
    def _bounds_admit_the_assumptions(self) -> "Assumptions":
        if self.min_draft_seconds_per_token > self.draft_seconds_per_token:
            raise ValueError("min_draft_seconds_per_token exceeds the assumed draft_seconds_per_token")
        if self.min_acceptance > self.acceptance:
            raise ValueError("min_acceptance exceeds the assumed acceptance")
        return self
    spectral_efficiency: float = Field(4.0, ge=0, le=20, allow_inf_nan=False, description="bit/s/Hz of every "
                                       "pair when no link emulator reports measurements")


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "tma-equal"
    seed: int = Field(0, ge=0)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, params: dict) -> dict:
        """The seed, the policy directory and objects are the controller's to give, never a parameter's."""
        if reserved := sorted(RESERVED_PARAMS & set(params)):
            raise ValueError(f"policy parameter {reserved[0]!r} cannot be set")
        return params


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edges: list[EdgeSpec] = Field(min_length=1)
    users: list[UserSpec] = Field(min_length=1)
    profile: Path = Field(SHIPPED_PROFILE, description="hardware profile whose edge part times every edge's engine "
                          "steps (tandem/edge_model.py), as the edges' --profile (default: the shipped "
                          "phone-1b-gpu-8b)")
    linkemu: str | None = Field(None, pattern=ADDRESS_PATTERN, description="the link emulator's LinkControl "
                                "address: measurements in, assignments out (default: none, static spectral "
                                "efficiency)")
    slot_s: float = Field(1.0, ge=0.05, le=3600, allow_inf_nan=False, description="seconds between decisions")
    failover_after_s: float = Field(3.0, gt=0, le=3600, allow_inf_nan=False, description="an edge that fails its "
                                    "load probes this long is taken out of the topology; its users move")
    policy: PolicySpec = PolicySpec()
    policy_dir: Path = Field(SHIPPED_POLICY_DIR, description="the only folder learned-policy checkpoints are loaded "
                             "from, each a sub-folder named by the `checkpoint` parameter (default: the shipped "
                             "policies)")
    assume: Assumptions = Assumptions()
    share_floor: float = Field(DEFAULT_SHARE_FLOOR, ge=0, le=1, allow_inf_nan=False, description="every member "
                               "of an edge with an open session keeps at least share_floor / (such members) of the "
                               "edge's bandwidth and compute, whatever the policy decided: what bounds how far one "
                               "user's reports can move the others")
    watches_per_identity: int = Field(4, ge=1, le=1024, description="allocation watches one client identity may "
                                      "hold open at once")
    report_rate_per_s: float = Field(10.0, gt=0, le=10_000, allow_inf_nan=False, description="reports one client "
                                     "identity may send per second (after a burst of twice that)")
    listen: str = Field("127.0.0.1:50070", pattern=ADDRESS_PATTERN)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    state: Path | None = Field(None, description="SQLite file of topology, policy and the latest decision "
                               "(default <data-dir>/controller.sqlite)")
    admin_token_file: Path | None = Field(None, description=f"file holding the admin token (else ${ADMIN_TOKEN_ENV};"
                                          f" else one is made beside the state file)")
    tls: TlsSettings = TlsSettings()
    _edge_profile: EdgeProfile = PrivateAttr()

    @model_validator(mode="after")
    def _unique(self) -> "ControllerConfig":
        for what, ids in (("edge", [e.id for e in self.edges]), ("user", [u.id for u in self.users])):
            if duplicated := [i for i, n in Counter(ids).items() if n > 1]:
                raise ValueError(f"{what} id listed twice: {duplicated[0]}")
        return self

    @model_validator(mode="after")
    def _read_profile(self) -> "ControllerConfig":
        try:
            self._edge_profile = load_profile(self.profile).edge
        except ProfileError as error:
            raise ValueError(str(error)) from None
        return self

    def edge(self, edge_id: int) -> EdgeSpec:
        return next(e for e in self.edges if e.id == edge_id)

    def edge_timing(self, spec: EdgeSpec) -> EdgeTiming:
        """How long the edge's engine steps take (the model its pacing runs)."""
        return EdgeTiming(self._edge_profile, spec.compute_scale, spec.step_tokens)

    def topology_json(self) -> str:
        return self.model_dump_json(include={"edges", "users", "profile", "linkemu", "slot_s", "failover_after_s",
                                             "assume"})
