"""Figures the tests measure (near-ties, divergences, fuzzing counts): printed at the end of a pytest run and saved
to results/test_report.json by tests/conftest.py."""

REPORT: dict[str, dict] = {}
