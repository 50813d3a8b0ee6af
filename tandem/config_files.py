"""Config files: YAML read safely and validated into a pydantic model, the one way every config, profile and
scenario is read, so that a bad file is refused with its reader's error and a one-line reason naming the file (or
the field), never a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)

MAX_YAML_BYTES = 16 << 20


class YamlFileError(ValueError):
    """A YAML file that cannot be read or parsed, with the reason (each reader names the file)."""


def read_yaml(path: Path) -> Any:
    """The document in a YAML file.  Reading raises OSError and UnicodeDecodeError (not UTF-8), and PyYAML's safe
    loader more than YAMLError: ValueError (2001-02-30, an integer of over 4300 digits), KeyError (``!!bool x``),
    AttributeError (``!!timestamp x``), IndexError (``!!int`` without a value), RecursionError (deep nesting):
    YamlFileError for every one."""
    path = Path(path)
    try:
        # Only a regular file of sane size: a config naming /dev/zero or a FIFO must not hang the reader.
        if path.exists() and not path.is_file():
            raise YamlFileError(f"{path} is not a regular file")
        if path.exists() and path.stat().st_size > MAX_YAML_BYTES:
            raise YamlFileError(f"{path} is over {MAX_YAML_BYTES >> 20} MiB")
        text = path.read_text()
    except (OSError, UnicodeDecodeError, ValueError) as error:  # ValueError: a NUL byte in the path
        raise YamlFileError(str(error)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:  # PyYAML's message spans lines (a caret under the spot): one line is enough
        raise YamlFileError(" ".join(str(error).replace('"<unicode string>", ', "").split())) from None
    except Exception as error:  # noqa: BLE001 - the loader's other failures, listed above
        raise YamlFileError(f"not valid YAML ({type(error).__name__}: {error})") from None


def validation_reasons(error: ValidationError) -> str:
    """One line naming each invalid field and why, e.g. "users.0.share: Input should be <= 1"."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())


def read_mapping(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file: an empty one); ``error`` "cannot read <what> <path>: …" or
    "<what> <path> must hold a mapping"."""
    try:
        data = read_yaml(path)
    except YamlFileError as reason:
        raise error(f"cannot read {what} {path}: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a mapping")
    return data


def validate(model: type[Model], data: Mapping[str, Any], what: str, error: type[Exception]) -> Model:
    """``data`` as a ``model``; ``error`` "invalid <what>: <each invalid field and why>"."""
    try:
        return model.model_validate(data)
    except ValidationError as reasons:
        raise error(f"invalid {what}: {validation_reasons(reasons)}") from None


def load_model_file(model: type[Model], path: Path, what: str, error: type[Exception]) -> Model:
    """A YAML file as a ``model`` (a profile, a scenario): ``error`` naming the <what> and the file when it cannot
    be read, holds no mapping or is invalid."""
    return validate(model, read_mapping(path, what, error), f"{what} {path}", error)


def load_config(model: type[Model], path: Path | None, overrides: Mapping[str, Any], error: type[Exception]) -> Model:
    """A daemon's config: the optional YAML file with the flags given explicitly on top (``section.field`` sets a
    field of a section; None: not given).  The error names no file when invalid: a flag may be the culprit."""
    data = read_mapping(path, "config file", error) if path is not None else {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition(".")
        if field:
            if data.get(section) is None:  # absent, or left empty in the file ("tls:")
                data[section] = {}
            elif not isinstance(data[section], dict):
                raise error(f"invalid configuration: {section}: must be a mapping (--{field.replace('_', '-')} "
                            "sets one of its fields)")
            data[section][field] = value
        else:
            data[key] = value
    return validate(model, data, "configuration", error)
