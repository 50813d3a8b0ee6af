"""Operators' tools, not daemons: channel-trace generation from Sionna (`traces/`), model preparation, the
development certificate authority, hardware profiling of the engines, and the health probe. Each tool registers
its commands with `tandem` (toolbox/commands.py); the daemons never import this package."""
