"""Hypothesis strategies for any protobuf message (built from its descriptor) and for bytes that are not one.

``messages(cls)`` fills every field, recursively, from adversarial families:

- integers: 0, 1, -1 (for an unsigned type its maximum, which is what -1 becomes), the type's bounds and their
  neighbours, then any value of the type: off-by-one, sign and overflow bugs live at the bounds;
- floats: NaN (compares false with everything, so ``share > 1`` lets it through), +-inf and +-1e308 (overflow a
  sum; 1e308 is inf as a float32), -0.0 (passes ``>= 0``), denormals 5e-324 and 1e-45 (> 0, yet vanish in a
  product or a float32), 1 + ulp (just past an inclusive bound), then any float of the field's width;
- enums: each defined value, then any int32 (proto3 enums are open: unknown numbers reach the handler);
- strings and bytes: short random ones or long ones (1k-20k): length limits, per-character costs;
- repeated fields: short random lists or huge ones (100-3000 elements; the size matters for allocations and loop
  bounds, not variety, so a few drawn values are tiled); repeated messages stay short and elements of repeated
  fields are never long themselves, so that a message stays under ~1 MB (the transport refuses larger ones
  before any handler runs);
- oneofs: each member or none; proto3 ``optional`` fields (synthetic oneofs) present or absent; singular message
  fields set or not; maps with random keys and values.

``ints``/``strings`` replace the integer/string families: small integers and known names pass the first range
checks and reach the logic behind them (open, then a block at the right position; a known user or policy).
Out-of-range integers (2**64 - 1 in a uint32 field) cannot be set on a Python message: ``garbage`` puts them on
the wire.
"""

from __future__ import annotations

import math

from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

I32, I64, U32, U64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1), (0, 2**32 - 1), (0, 2**64 - 1)
INT_RANGES = {F.TYPE_INT32: I32, F.TYPE_SINT32: I32, F.TYPE_SFIXED32: I32, F.TYPE_INT64: I64, F.TYPE_SINT64: I64,
              F.TYPE_SFIXED64: I64, F.TYPE_UINT32: U32, F.TYPE_FIXED32: U32, F.TYPE_UINT64: U64, F.TYPE_FIXED64: U64}
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1.0000001, math.nan, math.inf, -math.inf, 5e-324, 1e-45, 1e308, -1e308]
NOT_VARINT = {F.TYPE_DOUBLE, F.TYPE_FLOAT, F.TYPE_FIXED64, F.TYPE_SFIXED64, F.TYPE_FIXED32, F.TYPE_SFIXED32,
              F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE}
MAX_DEPTH, MAX_BYTES, LEN = 4, 1 << 20, 2  # LEN: the length-delimited wire type


def _tiled(piece, low: int, high: int):
    """``piece`` (a short list or string) repeated up to a drawn length in [low, high]."""
    return st.builds(lambda part, n: (part * n)[:n], piece, st.integers(low, high))


def _sized(kind, big: bool):
    short = kind(max_size=40)
    return st.one_of(short, _tiled(kind(min_size=1, max_size=8), 1000, 20000)) if big else short


def _scalar(field, ints, strings, big):
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        bounds = list(dict.fromkeys([0, 1, -1 if low else high, low, high, low + 1, high - 1]))
        return ints if ints is not None else st.one_of(st.sampled_from(bounds), st.integers(low, high))
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(width=32 if field.type == F.TYPE_FLOAT else 64))
    if field.type == F.TYPE_ENUM:
        return st.one_of(st.sampled_from([value.number for value in field.enum_type.values]), st.integers(*I32))
    if field.type == F.TYPE_STRING:
        return strings if strings is not None else _sized(st.text, big)
    return st.booleans() if field.type == F.TYPE_BOOL else _sized(st.binary, big)


def _is_map(field) -> bool:
    return field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _single(field, ints, strings, depth, big, base=None):
    if field.type == F.TYPE_MESSAGE:
        return _message(field.message_type, ints, strings, depth + 1, big, base)
    return _scalar(field, ints, strings, big)


def _value(field, ints, strings, depth, big, base=None):
    if _is_map(field):
        key, value = (field.message_type.fields_by_name[name] for name in ("key", "value"))
        return st.dictionaries(_scalar(key, ints, strings, False), _single(value, ints, strings, depth, big),
                               max_size=6)
    if not field.is_repeated:
        return _single(field, ints, strings, depth, big, base)
    element = _single(field, ints, strings, depth, False)
    if field.type == F.TYPE_MESSAGE:
        return st.lists(element, max_size=6)
    return st.one_of(st.lists(element, max_size=8), _tiled(st.lists(element, min_size=1, max_size=4), 100, 3000))


def _assign(message: Message, field, value) -> None:
    target = getattr(message, field.name)
    if _is_map(field):
        for key, item in value.items():
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


@st.composite
def _message(draw, descriptor, ints, strings, depth, big=True, base=None):
    message = GetMessageClass(descriptor)()
    if base is not None:
        message.CopyFrom(base)
    if depth >= MAX_DEPTH:
        return message
    rate = draw(st.sampled_from([0, 1, 4])) if base is not None else 0  # eighths of the base's fields replaced

    def keep() -> bool:  # the base's value here? (shrinks towards yes)
        return base is not None and (rate == 0 or draw(st.integers(0, 7)) >= rate)

    chosen = {}
    for oneof in descriptor.oneofs:
        member = base.WhichOneof(oneof.name) if base is not None else None
        chosen[oneof] = descriptor.fields_by_name[member] if member and keep() else draw(
            st.sampled_from([None, *oneof.fields]))
        if chosen[oneof] is None:
            message.ClearField(oneof.name)
    for field in descriptor.fields:
        oneof, singular_message = field.containing_oneof, field.type == F.TYPE_MESSAGE and not field.is_repeated
        if oneof is not None and chosen[oneof] is not field:
            continue
        if base is not None and (oneof is None or base.WhichOneof(oneof.name) == field.name) and keep():
            continue  # the base's value
        message.ClearField(field.name)
        if oneof is None and singular_message and not draw(st.booleans()):
            continue  # a singular message field left unset
        inner = getattr(base, field.name) if singular_message and base is not None and base.HasField(field.name) \
            else None
        _assign(message, field, draw(_value(field, ints, strings, depth, big, inner)))
    return message


def messages(message_class, ints=None, strings=None, base=None):
    """Instances of ``message_class`` (see the module docstring), serialized under MAX_BYTES; with ``base`` (one
    of them, valid), each field (recursively) is the base's or a drawn one: none, 1/8 or half of them replaced."""
    strategy = _message(message_class.DESCRIPTOR, ints, strings, 0, True, base)
    return strategy.filter(lambda message: message.ByteSize() < MAX_BYTES)


def varint(value: int) -> bytes:
    value &= 2**64 - 1  # a negative number travels as its 64-bit two's complement (ten bytes)
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    """A field as encoded: its tag, then the payload (length-prefixed for LEN)."""
    return varint(number << 3 | wire_type) + (varint(len(payload)) + payload if wire_type == LEN else payload)


def garbage(message_class, other_classes=None):
    """Bytes sent where a ``message_class`` is expected (through a channel without serializers). Families:

    - random bytes: mostly not protobuf (a bad tag, a length past the end), sometimes by chance a valid message;
    - a valid message cut short: a length or a varint runs past the end;
    - a valid message of another type (``other_classes``, else those of the same .proto file): parses when field
      numbers and wire types happen to agree, and the handler sees fields it never expected;
    - a valid message, then a field with a mismatched or invalid wire type (6, 7), field number 0 or 2**29 - 1,
      or an overlong 11-byte varint; random payloads of string fields are mostly invalid UTF-8;
    - a valid message, then a varint field holding a value out of its type's range (2**64 - 1 in a uint32, a
      64-bit value in an int32, a negative number in an unsigned field): decoders truncate it, so it parses and
      the handler sees a wrapped value.
    """
    descriptor = message_class.DESCRIPTOR
    valid = messages(message_class).map(lambda message: message.SerializeToString())
    numbers = st.sampled_from([field.number for field in descriptor.fields] + [0, 2**29 - 1])
    varints = [field.number for field in descriptor.fields if field.type not in NOT_VARINT]  # ints, enums, bools
    others = [cls for cls in other_classes or map(GetMessageClass, descriptor.file.message_types_by_name.values())
              if cls is not message_class]
    overflow = st.sampled_from([2**64 - 1, 2**63, 2**32, 2**32 + 7, 2**40, -1, -(2**31) - 1]) | st.integers(*I64)
    payload = st.binary(max_size=24) | st.just(b"\xff\xfe\xc0\x80")
    families = [
        st.binary(max_size=2000),
        st.builds(lambda body, cut: body[: cut % max(len(body), 1)], valid, st.integers(0, MAX_BYTES)),
        st.builds(lambda body, n, wire, tail: body + _field(n, wire, tail), valid, numbers, st.integers(0, 7), payload),
        st.builds(lambda body, n: body + varint(n << 3) + b"\xff" * 10 + b"\x01", valid, numbers),
        *([st.sampled_from(others).flatmap(messages).map(lambda m: m.SerializeToString())] if others else []),
        *([st.builds(lambda body, n, value: body + _field(n, 0, varint(value)), valid, st.sampled_from(varints),
                     overflow)] if varints else []),
    ]
    return st.one_of(families)
