"""M_M's search checkpoints in the Cortex: the LMDB side of `gd.motors.checkpoints`.

The motors define what a checkpoint is (`CheckpointStore`: bytes by search id, and the
format they encode); the node decides where it lives. Here: the Cortex's `meristic`
sub-database, one key per search, each save its own write transaction, so a crash leaves
the last whole generation and `gd-node adapt` resumes from it.
"""

from __future__ import annotations

from typing import Any

import lmdb

from gd.motors.checkpoints import CHECKPOINT_DB


class LmdbCheckpoints:
    """A `gd.motors.checkpoints.CheckpointStore` on an LMDB environment: the Cortex's
    (`LmdbCheckpoints(cortex.env, cortex.open_db("meristic"))`) or a plain one, whose
    `meristic` sub-database is opened when `db` is not given."""

    def __init__(self, env: lmdb.Environment, db: Any = None) -> None:
        self.env = env
        self.db = db if db is not None else env.open_db(CHECKPOINT_DB)

    def load(self, search_id: str) -> bytes | None:
        with self.env.begin() as txn:
            raw = txn.get(search_id.encode(), db=self.db)
        return None if raw is None else bytes(raw)

    def save(self, search_id: str, raw: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(search_id.encode(), raw, db=self.db)

    def delete(self, search_id: str) -> None:
        with self.env.begin(write=True) as txn:
            txn.delete(search_id.encode(), db=self.db)
