from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComputeShare(_message.Message):
    __slots__ = ("user", "share")
    USER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    user: int
    share: float
    def __init__(self, user: _Optional[int] = ..., share: _Optional[float] = ...) -> None: ...

class SetSharesRequest(_message.Message):
    __slots__ = ("version", "shares")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    version: int
    shares: _containers.RepeatedCompositeFieldContainer[ComputeShare]
    def __init__(self, version: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[ComputeShare, _Mapping]]] = ...) -> None: ...

class GetLoadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UserLoad(_message.Message):
    __slots__ = ("user", "share", "sessions", "served_tokens", "remaining_tokens", "recent_drafted_tokens", "recent_accepted_tokens", "recent_rejected_blocks")
    USER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RECENT_DRAFTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ACCEPTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RECENT_REJECTED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    user: int
    share: float
    sessions: int
    served_tokens: int
    remaining_tokens: int
    recent_drafted_tokens: int
    recent_accepted_tokens: int
    recent_rejected_blocks: int
    def __init__(self, user: _Optional[int] = ..., share: _Optional[float] = ..., sessions: _Optional[int] = ..., served_tokens: _Optional[int] = ..., remaining_tokens: _Optional[int] = ..., recent_drafted_tokens: _Optional[int] = ..., recent_accepted_tokens: _Optional[int] = ..., recent_rejected_blocks: _Optional[int] = ...) -> None: ...

class EdgeLoad(_message.Message):
    __slots__ = ("version", "sessions", "queue_depth", "verify_seconds_mean", "best_effort_jobs", "users", "draining")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    VERIFY_SECONDS_MEAN_FIELD_NUMBER: _ClassVar[int]
    BEST_EFFORT_JOBS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    version: int
    sessions: int
    queue_depth: int
    verify_seconds_mean: float
    best_effort_jobs: int
    users: _containers.RepeatedCompositeFieldContainer[UserLoad]
    draining: bool
    def __init__(self, version: _Optional[int] = ..., sessions: _Optional[int] = ..., queue_depth: _Optional[int] = ..., verify_seconds_mean: _Optional[float] = ..., best_effort_jobs: _Optional[int] = ..., users: _Optional[_Iterable[_Union[UserLoad, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...

class WatchAllocationRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: int
    def __init__(self, user: _Optional[int] = ...) -> None: ...

class UserAllocation(_message.Message):
    __slots__ = ("version", "slot", "user", "edge", "edge_address", "bandwidth_share", "compute_share", "draft_length")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    EDGE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_SHARE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SHARE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    version: int
    slot: int
    user: int
    edge: int
    edge_address: str
    bandwidth_share: float
    compute_share: float
    draft_length: int
    def __init__(self, version: _Optional[int] = ..., slot: _Optional[int] = ..., user: _Optional[int] = ..., edge: _Optional[int] = ..., edge_address: _Optional[str] = ..., bandwidth_share: _Optional[float] = ..., compute_share: _Optional[float] = ..., draft_length: _Optional[int] = ...) -> None: ...

class UserReport(_message.Message):
    __slots__ = ("user", "draft_seconds_per_token", "acceptance", "pending_tokens", "round_seconds")
    USER_FIELD_NUMBER: _ClassVar[int]
    DRAFT_SECONDS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    PENDING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ROUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    user: int
    draft_seconds_per_token: float
    acceptance: float
    pending_tokens: int
    round_seconds: float
    def __init__(self, user: _Optional[int] = ..., draft_seconds_per_token: _Optional[float] = ..., acceptance: _Optional[float] = ..., pending_tokens: _Optional[int] = ..., round_seconds: _Optional[float] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EdgeStatus(_message.Message):
    __slots__ = ("edge", "address", "healthy", "sessions", "queue_depth", "shares_version")
    EDGE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SHARES_VERSION_FIELD_NUMBER: _ClassVar[int]
    edge: int
    address: str
    healthy: bool
    sessions: int
    queue_depth: int
    shares_version: int
    def __init__(self, edge: _Optional[int] = ..., address: _Optional[str] = ..., healthy: _Optional[bool] = ..., sessions: _Optional[int] = ..., queue_depth: _Optional[int] = ..., shares_version: _Optional[int] = ...) -> None: ...

class ControllerStatus(_message.Message):
    __slots__ = ("version", "slot", "policy", "policy_params", "decided_at", "decision_seconds", "allocations", "edges", "estimated_mean_latency_s")
    class PolicyParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_PARAMS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_MEAN_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    version: int
    slot: int
    policy: str
    policy_params: _containers.ScalarMap[str, str]
    decided_at: float
    decision_seconds: float
    allocations: _containers.RepeatedCompositeFieldContainer[UserAllocation]
    edges: _containers.RepeatedCompositeFieldContainer[EdgeStatus]
    estimated_mean_latency_s: float
    def __init__(self, version: _Optional[int] = ..., slot: _Optional[int] = ..., policy: _Optional[str] = ..., policy_params: _Optional[_Mapping[str, str]] = ..., decided_at: _Optional[float] = ..., decision_seconds: _Optional[float] = ..., allocations: _Optional[_Iterable[_Union[UserAllocation, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[EdgeStatus, _Mapping]]] = ..., estimated_mean_latency_s: _Optional[float] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("name", "description", "params", "active")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    params: _containers.ScalarMap[str, str]
    active: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., active: _Optional[bool] = ...) -> None: ...

class PolicyList(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("name", "checkpoint", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    checkpoint: str
    params: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., checkpoint: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...
