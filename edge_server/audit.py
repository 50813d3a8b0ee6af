"""Appends the verification log (``--verification-log FILE``): one JSON line per verified block.

The record format and everything that reads it live in ``tandem.verification_log``.  Each line is flushed as it is
written, so a log can be read while the edge runs; sessions are told apart by their ids.
"""

from __future__ import annotations

from pathlib import Path

from tandem.verification_log import BlockRecord, open_for_append


class VerificationLogWriter:
    def __init__(self, path: Path) -> None:
        self._file = open_for_append(path)  # 0600: every user's prompts and answers

    def write(self, record: BlockRecord) -> None:
        self._file.write(record.model_dump_json() + "\n")

    def close(self) -> None:
        self._file.close()
