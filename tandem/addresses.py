"""The one rule for a network address on the command line and in config files: HOST:PORT or [IPv6]:PORT."""

from __future__ import annotations

ADDRESS_PATTERN = r"^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$"
HOST_PATTERN = r"^[^\s:]+$|^[0-9a-fA-F:]+$"  # a name, an IPv4 address, or a bare IPv6 address (to bind to)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
