"""A sink's durable, bounded queue: one SQLite file per sink under the run folder.

The alerter commits its input offsets only after every alert of the batch is in every sink's spool
(SQLite with synchronous=FULL), so an alert survives a crash of the alerter and an outage of the sink.
An alert id is queued at most once: a replayed batch after a crash does not queue duplicates.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    seq: int
    alert: dict[str, Any]
    attempts: int


class Spool:
    def __init__(self, path: Path, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self.lock = threading.Lock()  # the alerter's loop enqueues while the sink's thread drains
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT UNIQUE,"
            " body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,"
            " last_error TEXT)"
        )

    def put(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue the alerts durably; return the oldest alerts evicted to keep the bound (to dead-letter)."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT OR IGNORE INTO queue (alert_id, body) VALUES (?, ?)",
                    [(a["alert_id"], json.dumps(a)) for a in alerts],
                )
                excess = self._count() - self.max_entries
                evicted = []
                if excess > 0:
                    rows = self.db.execute("SELECT seq, body FROM queue ORDER BY seq LIMIT ?", (excess,)).fetchall()
                    self.db.executemany("DELETE FROM queue WHERE seq = ?", [(r[0],) for r in rows])
                    evicted = [json.loads(r[1]) for r in rows]
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return evicted

    def due(self, limit: int, now: float) -> list[Entry]:
        """The oldest entries whose retry time has come, in queue order."""
        with self.lock:
            rows = self.db.execute(
                "SELECT seq, body, attempts FROM queue WHERE next_at <= ? ORDER BY seq LIMIT ?", (now, limit)
            ).fetchall()
        return [Entry(seq, json.loads(body), attempts) for seq, body, attempts in rows]

    def next_due(self) -> float | None:
        with self.lock:
            row = self.db.execute("SELECT MIN(next_at) FROM queue").fetchone()
        return row[0]

    def remove(self, seqs: list[int]) -> None:
        with self.lock:
            self.db.executemany("DELETE FROM queue WHERE seq = ?", [(s,) for s in seqs])

    def retry_later(self, seqs: list[int], next_at: float, error: str) -> None:
        with self.lock:
            self.db.executemany(
                "UPDATE queue SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE seq = ?",
                [(next_at, error, s) for s in seqs],
            )

    def __len__(self) -> int:
        with self.lock:
            return self._count()

    def _count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self.db.close()
