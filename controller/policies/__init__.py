"""Policies by name: the built-in ones and any a user installs, found through the ``tandem.policies`` entry points
(a package declares ``[project.entry-points."tandem.policies"] my-policy = "pkg.module:MyPolicy"``)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from controller.policies.base import Policy

ENTRY_POINT_GROUP = "tandem.policies"


def available() -> dict[str, type[Policy]]:
    """Every installed policy class by name."""
    return {point.name: point.load() for point in entry_points(group=ENTRY_POINT_GROUP)}


RESERVED_PARAMS = frozenset({"seed", "policy_dir", "actor"})  # set by the caller, never by a policy's parameters


def make_policy(name: str, seed: int = 0, policy_dir: Path | None = None, **params) -> Policy:
    """The named policy; ValueError naming the installed ones when there is no such policy or a parameter is
    not one it takes.  ``policy_dir``: where a learned policy finds the checkpoint its ``checkpoint`` parameter
    names (default: the shipped policies)."""
    policies = available()
    if name not in policies:
        raise ValueError(f"unknown policy {name!r} (installed: {', '.join(sorted(policies))})")
    cls = policies[name]
    if policy_dir is not None and cls.uses_policy_dir:
        params["policy_dir"] = policy_dir
    try:
        return cls(seed=seed, **params)
    except TypeError as error:
        raise ValueError(f"policy {name}: {error}") from None
