"""Policies by name: the built-in ones and any a user installs, found through the ``tandem.policies`` entry points
(a package declares ``[project.entry-points."tandem.policies"] my-policy = "pkg.module:MyPolicy"``)."""

from __future__ import annotations

from importlib.metadata import entry_points

from controller.policies.base import Policy

ENTRY_POINT_GROUP = "tandem.policies"


def available() -> dict[str, type[Policy]]:
    """Every installed policy class by name."""
    return {point.name: point.load() for point in entry_points(group=ENTRY_POINT_GROUP)}


def make_policy(name: str, seed: int = 0, **params) -> Policy:
    """The named policy; ValueError naming the installed ones when there is no such policy or a parameter is
    not one it takes."""
    policies = available()
    if name not in policies:
        raise ValueError(f"unknown policy {name!r} (installed: {', '.join(sorted(policies))})")
    try:
        return policies[name](seed=seed, **params)
    except TypeError as error:
        raise ValueError(f"policy {name}: {error}") from None
