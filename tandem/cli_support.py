"""Small helpers shared by the CLI handlers: exit codes and turning validation errors into one-line reasons."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # bad arguments or configuration, as argparse does
EXIT_UNREACHABLE = 3

Model = TypeVar("Model", bound=BaseModel)


class UsageError(Exception):
    """Bad user input: the CLI prints the message and exits with code 2."""


class YamlFileError(ValueError):
    """A YAML file that cannot be read or parsed, with the reason (each config reader names the file)."""


MAX_YAML_BYTES = 16 << 20


def read_yaml(path: Path) -> Any:
    """The document in a YAML file, for every config reader, so that a bad file is refused with the reader's error
    and not a traceback: reading raises OSError and UnicodeDecodeError (not UTF-8), and PyYAML's safe loader more
    than YAMLError: ValueError (2001-02-30, an integer of over 4300 digits), KeyError (``!!bool x``),
    AttributeError (``!!timestamp x``), IndexError (``!!int`` without a value), RecursionError (deep nesting)."""
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
    except yaml.YAMLError as error:
        raise YamlFileError(str(error)) from None
    except Exception as error:  # noqa: BLE001 - the loader's other failures, listed above
        raise YamlFileError(f"not valid YAML ({type(error).__name__}: {error})") from None


def validation_reasons(error: ValidationError) -> str:
    """One line naming each invalid field and why, e.g. "users.0.share: Input should be <= 1"."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())


def fail(message: str, code: int) -> int:
    print(f"tandem: error: {message}", file=sys.stderr)
    return code


def build_config(model: type[Model], config_file: Path | None, overrides: dict[str, Any]) -> Model:
    """A config from an optional YAML file, with the explicitly given flags on top; UsageError when invalid."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = read_yaml(config_file)
        except YamlFileError as error:
            raise UsageError(f"cannot read config file {config_file}: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):  # an empty file is an empty mapping
            raise UsageError(f"config file {config_file} must hold a mapping")
        data = loaded or {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise UsageError(f"invalid configuration: {validation_reasons(error)}") from None
