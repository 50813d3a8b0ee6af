"""Channel traces: generated once from Sionna simulations, replayed by the link emulator (and later the controller)."""
