"""The write operations as control-socket methods of a running daemon.

Why here: while a daemon runs it is the node's one writer (ADR 0022). A CLI command that
changes the node sends its operation over the control socket; the daemon runs the same
function the CLI would (`ops`), one write at a time off the event loop, and then tells
the services what changed — the sync service hints peers of a grown feed, the
sovereignty service delivers agreements and queues tombstones — so neither polls.

A gene import first streams the file into the home in chunks (`upload_open`,
`upload_chunk`, each under the control message limit), then imports it reporting lines
done as progress frames.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from gd.crdt.clock import Clock
from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.ledger.errors import LedgerError
from gd.motors.errors import CheckpointError, MotorInputError
from gd.node.app.adaptation import AdaptationDesk
from gd.node.control import MAX_UPLOAD_CHUNK, MethodFailed, Progress
from gd.node.control_methods.admin_ops import TRUST, WRITE_OPS
from gd.node.control_methods.ops import FEED, POLICY, STREAMING, Sovereignty, WriteOp
from gd.node.control_methods.trust_reload import reload_trust
from gd.node.local import LocalNode
from gd.node.services.recorder import Receipt
from gd.node.store.audit import AuditError, LedgerSink
from gd.node.store.cortex import CortexError
from gd.protocol.sovereignty_agreements import ProposalError

# Uploads open at once: a CLI holds one for the length of an import; four lets a few
# scripts import side by side, and a confused client cannot fill the disk with many.
MAX_UPLOADS: Final = 4
# An upload is a gene file; 2 GiB is millions of genes, far past any real import.
MAX_UPLOAD_BYTES: Final = 2 * 1024 * 1024 * 1024
# An upload nobody writes to for this long is abandoned (the CLI died): removed.
UPLOAD_IDLE_S: Final = 600.0
UPLOAD_PREFIX: Final = "cli-upload-"
# The errors a write reports as the user's (bad input, unknown gene, refused change);
# anything else is a bug, logged in full and reported as one line.
_USER_ERRORS: Final = (ValidationError, DecodeError, SignatureError, CortexError,
                       AuditError, ProposalError, LedgerError, MotorInputError,
                       CheckpointError, OSError, ValueError, LookupError)


class ReceiptsOf:
    """The daemon's ledger sink, keeping the receipts of one command's records."""

    def __init__(self, inner: LedgerSink) -> None:
        self.inner = inner
        self.receipts: list[Receipt] = []

    def append(self, kind: str, payload_hash: bytes, summary: dict[str, Any],
               idempotency_key: str) -> object:
        receipt = self.inner.append(kind, payload_hash, summary, idempotency_key)
        if receipt is not None:
            self.receipts.append(receipt)  # type: ignore[arg-type]
        return receipt


class DaemonWriteContext:
    """A write inside the daemon: its open Cortex, key and sovereignty stores."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.node = LocalNode(daemon.home, daemon.cfg, daemon.key, daemon.cortex)
        self.clock: Clock = daemon.gate.clock

    def sovereignty(self) -> Sovereignty:
        service = self.daemon.sovereignty
        ledger = ReceiptsOf(service.ledger)
        desk = AdaptationDesk(self.node.cortex, self.node.key, ledger, service.audit)
        return Sovereignty(service.audit, service.store, ledger, desk)


@dataclass
class _Upload:
    path: Path
    touched: float  # the daemon clock's monotonic time of the last chunk
    size: int = 0


class WriteMethods:
    """Registers every write operation and the upload methods on a daemon."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        # Upload idle timeouts read the daemon's injected clock (a test advances it).
        self.clock: Clock = daemon.gate.clock
        self.log = daemon.log.bind(component="control")
        self.lock = trio.Lock()
        self.uploads: dict[str, _Upload] = {}
        self.calls = 0  # writes served (the status method reports it)
        self._sweep_leftovers()
        for name, op in WRITE_OPS.items():
            daemon.methods.add(name, self._handler(name, op), streaming=name in STREAMING)
        daemon.methods.add("upload_open", self.upload_open)
        daemon.methods.add("upload_chunk", self.upload_chunk)
        daemon.methods.add("writes_served", self.writes_served)

    def _sweep_leftovers(self) -> None:
        """Uploads of a daemon that crashed mid-import."""
        for stale in self.daemon.home.root.glob(UPLOAD_PREFIX + "*"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def _handler(self, name: str, op: WriteOp) -> Any:
        async def handler(progress: Progress | None = None, **params: Any) -> Any:
            return await self.run(name, op, params, progress)
        return handler

    async def run(self, name: str, op: WriteOp, params: dict[str, Any],
                  progress: Progress | None) -> Any:
        upload = params.pop("upload", None)
        if upload is not None:
            params["path"] = str(self._take(upload))
        try:
            async with self.lock:
                result = await self._call(name, op, params, progress)
        finally:
            if upload is not None:
                with contextlib.suppress(OSError):
                    os.unlink(params["path"])
            self._notify(op)
        if TRUST in op.touches:  # the pins changed on disk: the daemon uses them now
            try:
                await reload_trust(self.daemon)
            except (ValueError, OSError) as exc:
                raise MethodFailed(f"{name} was written, but the daemon could not read its "
                                   f"trust anchors again: {exc}") from None
        return result

    async def _call(self, name: str, op: WriteOp, params: dict[str, Any],
                    progress: Progress | None) -> Any:
        ctx = DaemonWriteContext(self.daemon)
        if progress is not None:
            token = trio.lowlevel.current_trio_token()
            params["progress"] = lambda done: trio.from_thread.run(progress, done,
                                                                   trio_token=token)
        self.calls += 1
        try:
            return await trio.to_thread.run_sync(lambda: op.run(ctx, **params))
        except TypeError as exc:
            raise MethodFailed(f"bad parameters for {name}: {exc}") from None
        except _USER_ERRORS as exc:
            raise MethodFailed(str(exc) or type(exc).__name__) from None
        except Exception as exc:  # a bug must not take the control socket down
            self.log.exception("control.write_failed", method=name)
            raise MethodFailed(f"unexpected {type(exc).__name__} in the daemon: {exc} "
                               "(a bug; the daemon's log has the traceback)") from None

    def _notify(self, op: WriteOp) -> None:
        """The daemon acts on the call: the services learn of the change now."""
        if FEED in op.touches and self.daemon.sync is not None:
            self.daemon.sync.notify_local_change()
        if POLICY in op.touches and self.daemon.sovereignty is not None:
            self.daemon.sovereignty.policy_changed()

    # -- uploads ---------------------------------------------------------------------

    async def upload_open(self, suffix: str = ".jsonl") -> str:
        now = self.clock.monotonic()
        for key, up in list(self.uploads.items()):
            if now - up.touched > UPLOAD_IDLE_S:
                self._drop(key)
        if len(self.uploads) >= MAX_UPLOADS:
            raise MethodFailed(f"{MAX_UPLOADS} uploads are already open on this daemon; "
                               "try again when an import has finished")
        if suffix not in (".jsonl", ".csv"):
            raise MethodFailed("an upload is a .jsonl or .csv gene file")
        fd, name = tempfile.mkstemp(prefix=UPLOAD_PREFIX, suffix=suffix,
                                    dir=self.daemon.home.root)  # mkstemp: mode 0600
        os.close(fd)
        key = secrets.token_hex(16)  # a capability: unpredictable on purpose, never seeded
        self.uploads[key] = _Upload(Path(name), now)
        return key

    async def upload_chunk(self, upload: str, data: bytes) -> int:
        up = self.uploads.get(upload)
        if up is None:
            raise MethodFailed("unknown or expired upload (open a new one)")
        if not isinstance(data, bytes) or len(data) > MAX_UPLOAD_CHUNK:
            raise MethodFailed(f"a chunk is bytes of at most {MAX_UPLOAD_CHUNK}")
        if up.size + len(data) > MAX_UPLOAD_BYTES:
            self._drop(upload)
            raise MethodFailed(f"the upload is over the limit of {MAX_UPLOAD_BYTES} bytes")

        def append() -> None:
            with up.path.open("ab") as out:
                out.write(data)

        await trio.to_thread.run_sync(append)
        up.size += len(data)
        up.touched = self.clock.monotonic()
        return up.size

    def _take(self, upload: Any) -> Path:
        up = self.uploads.pop(upload, None) if isinstance(upload, str) else None
        if up is None:
            raise MethodFailed("unknown or expired upload (open a new one)")
        return up.path

    def _drop(self, key: str) -> None:
        up = self.uploads.pop(key, None)
        if up is not None:
            with contextlib.suppress(OSError):
                up.path.unlink()

    async def writes_served(self) -> dict[str, Any]:
        """How many writes this daemon ran for the CLI, and its pid (tests and `status`
        read it to see that a command went through the daemon)."""
        return {"writes": self.calls, "pid": os.getpid()}


def register_write_methods(daemon: Any) -> WriteMethods | None:
    """Called once by the daemon after its services exist; none without a Cortex."""
    if daemon.cortex is None or daemon.sovereignty is None or daemon.sync is None:
        return None
    return WriteMethods(daemon)
