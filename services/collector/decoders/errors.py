"""The one error a decoder raises: a packet it cannot read, with a short machine-readable reason that
the listener counts and writes into the dead-letter record."""

from __future__ import annotations


class DecodeError(Exception):
    """`reason` is a fixed token (truncated, bad_version, ...) for counters; `detail` is for people."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
