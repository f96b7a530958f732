"""No direct read of the clock or of the OS's randomness in `node/` outside its allow-list.

Issue 12, item 5: one injected clock (`gd.crdt.clock.Clock`; the real one is
`gd.node.clock.SystemClock`) replaces every direct read, so a simulation can drive the
daemon on time and randomness it controls. A new `time.time()` (or `os.urandom`, ...) in
`node/` fails here; pass the daemon's clock (`gate.clock`) or its nonce source
(`gate.rng_nonce`) instead, or, if it truly must be unpredictable, add it below with why.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A read of the wall/monotonic/CPU clock, of the OS's randomness, or of the date.
DIRECT_READ = re.compile(
    r"\btime\.(?:time|monotonic|perf_counter|process_time)(?:_ns)?\b"
    r"|\bos\.urandom\b|\bsecrets\.\w+"
    r"|\bfrom\s+(?:time|secrets)\s+import\b|\bfrom\s+os\s+import\s+[^#\n]*\burandom\b"
    r"|\b(?:datetime|date)\.(?:now|utcnow|today)\(")

# (file, the exact read) -> why it stays. Each must still be there (a stale entry fails).
ALLOWED: dict[tuple[str, str], str] = {
    # The one real clock: everything else is handed it.
    ("node/clock.py", "time.time"): "SystemClock.wall",
    ("node/clock.py", "time.monotonic"): "SystemClock.monotonic",
    # Unpredictable on purpose, so never seeded (docs/architecture.md, "Kept on purpose").
    ("node/daemon.py", "os.urandom"): "the gate's nonce source: handshake and ping "
                                      "nonces, the ledger's per-start client nonce",
    ("node/api/tokens.py", "secrets.token_hex"): "API token ids",
    ("node/api/tokens.py", "secrets.token_bytes"): "API token secrets",
    ("node/api/job_store.py", "secrets.token_hex"): "a job id's random part",
    ("node/api/views_genes.py", "secrets.randbits"): "an evaluation's seed when the "
                                                     "caller gave none",
    ("node/control_methods/daemon_side.py", "secrets.token_hex"): "the upload id, a "
                                                                  "capability",
}


def _code(line: str) -> str:
    """The line without its trailing comment (a comment may name what it avoids)."""
    return line.split("#", 1)[0]


def direct_reads(root: Path) -> dict[tuple[str, str], list[int]]:
    """(file relative to the repository, the read) -> the lines it is on, for `node/`."""
    found: dict[tuple[str, str], list[int]] = {}
    for path in sorted((root / "node").rglob("*.py")):
        rel = str(path.relative_to(root))
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in DIRECT_READ.finditer(_code(line)):
                found.setdefault((rel, match.group(0)), []).append(number)
    return found


def test_node_reads_time_and_randomness_only_through_the_injected_sources() -> None:
    found = direct_reads(ROOT)
    unexpected = {f"{path}:{lines}": read for (path, read), lines in found.items()
                  if (path, read) not in ALLOWED}
    assert not unexpected, (
        "direct reads of time/randomness in node/: pass the injected Clock "
        f"(gate.clock) or nonce source (gate.rng_nonce) instead: {unexpected}")
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"allow-list entries no longer in the code (remove them): {stale}"


def test_the_scan_finds_a_new_read(tmp_path: Path) -> None:
    """The pattern catches the forms a new read would take, and skips comments."""
    room = tmp_path / "node" / "x"
    room.mkdir(parents=True)
    (room / "m.py").write_text(
        "import time\nstart = time.monotonic()\nfrom secrets import token_hex\n"
        "key = os.urandom(8)  # fine\nclock = time.time\nwhen = datetime.now()\n"
        "# time.perf_counter() in a comment is not a read\n")
    assert sorted(direct_reads(tmp_path)) == sorted(
        ("node/x/m.py", read) for read in ("time.monotonic", "from secrets import",
                                           "os.urandom", "time.time", "datetime.now("))
