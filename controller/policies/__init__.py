"""Policies by name: the built-in ones and any a user installs, found through the ``tandem.policies`` entry points
(a package declares ``[project.entry-points."tandem.policies"] my-policy = "pkg.module:MyPolicy"``)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from controller.policies.base import Policy

ENTRY_POINT_GROUP = "tandem.policies"


def available() -> dict[str, type[Policy]]:
    """Every installed policy class by name."""
    return {point.name: point.load() for point in entry_points(group=ENTRY_POINT_GROUP)}


RESERVED_PARAMS = frozenset({"seed", "policy_dir", "actor"})  # set by the caller, never by a policy's parameters


def make_policy(name: str, seed: int = 0, policy_dir: Path | None = None, *, known: Mapping[str, Any] | None = None,
                extra: Mapping[str, type[Policy]] | None = None, **params) -> Policy:
    """The named policy; ValueError naming the installed ones when there is no such policy or a parameter is
    not one it takes (or one the caller sets).  What the caller knows goes to a policy that takes it
    (``Policy.from_caller``), a None value being unknown: ``policy_dir``, where a learned policy finds the checkpoint
    its ``checkpoint`` parameter names (default: the shipped policies), and ``known`` (e.g. the twin's ``parallel``
    and ``twin``).  ``extra``: policies beside the installed ones (the twin's oracle, which only the twin can run)."""
    policies = available() | dict(extra or {})
    if name not in policies:
        raise ValueError(f"unknown policy {name!r} (installed: {', '.join(sorted(policies))})")
    cls = policies[name]
    given = {key: value for key, value in {**(known or {}), "policy_dir": policy_dir}.items()
             if value is not None and key in cls.from_caller}
    try:
        return cls(seed=seed, **given, **params)
    except TypeError as error:
        raise ValueError(f"policy {name}: {error}") from None
