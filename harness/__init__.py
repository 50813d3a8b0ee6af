"""What the tests and the benchmarks share: losslessness checks (teacher forcing, the replay of an edge's
decisions), the `tandem` CLI in a child process, admin and TLS credentials for the daemons they start, scenario
files for the twin, and the figures they measure. Not part of any daemon: nothing in the system imports it."""
