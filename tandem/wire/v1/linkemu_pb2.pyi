from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchMeasurementsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PairMeasurement(_message.Message):
    __slots__ = ("user", "edge", "sinr_down_db", "sinr_up_db", "se_down", "se_up")
    USER_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    SINR_DOWN_DB_FIELD_NUMBER: _ClassVar[int]
    SINR_UP_DB_FIELD_NUMBER: _ClassVar[int]
    SE_DOWN_FIELD_NUMBER: _ClassVar[int]
    SE_UP_FIELD_NUMBER: _ClassVar[int]
    user: int
    edge: int
    sinr_down_db: float
    sinr_up_db: float
    se_down: float
    se_up: float
    def __init__(self, user: _Optional[int] = ..., edge: _Optional[int] = ..., sinr_down_db: _Optional[float] = ..., sinr_up_db: _Optional[float] = ..., se_down: _Optional[float] = ..., se_up: _Optional[float] = ...) -> None: ...

class MeasurementReport(_message.Message):
    __slots__ = ("slot", "slot_s", "pairs")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    SLOT_S_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    slot: int
    slot_s: float
    pairs: _containers.RepeatedCompositeFieldContainer[PairMeasurement]
    def __init__(self, slot: _Optional[int] = ..., slot_s: _Optional[float] = ..., pairs: _Optional[_Iterable[_Union[PairMeasurement, _Mapping]]] = ...) -> None: ...

class UserAssignment(_message.Message):
    __slots__ = ("user", "edge", "share")
    USER_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    user: int
    edge: int
    share: float
    def __init__(self, user: _Optional[int] = ..., edge: _Optional[int] = ..., share: _Optional[float] = ...) -> None: ...

class AssignRequest(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[UserAssignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[UserAssignment, _Mapping]]] = ...) -> None: ...

class GetAssignmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SeekRequest(_message.Message):
    __slots__ = ("slot",)
    SLOT_FIELD_NUMBER: _ClassVar[int]
    slot: int
    def __init__(self, slot: _Optional[int] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[UserAssignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[UserAssignment, _Mapping]]] = ...) -> None: ...
