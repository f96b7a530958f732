"""A gene's own history: the states adaptation (M_M) searches on, and which statuses a
gene may be adapted from.

Why apart from `decisions`: auto-adaptation reads these on the sync apply path, and the
daemon builds its AutoAdapter at start. Importing them from `decisions` loaded the
motors and numpy (~0.4 s) before the daemon could answer /healthz (issue 15, ADR 0063);
this module needs only the Cortex's records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gd.genome import Gene, StateVector, canonical
from gd.genome.gene import GeneStatus

if TYPE_CHECKING:
    from gd.node.store.cortex import Cortex

# M_M adapts on the gene's own history (the states it was evaluated on and experienced).
# M_C samples up to `cap` (default 4096) futures for every state; 512 states keep that
# multiverse near 50 MB while covering a gene's recent life; older states are dropped.
MAX_ADAPT_STATES: Final = 512
# Statuses a gene may be adapted from: M_M grows variants of our own genes and of
# received, still pending ones (issue 7); a rejected, retired or revoked gene is done.
ADAPTABLE: Final = (GeneStatus.NATIVE, GeneStatus.ADAPTATION_PENDING)


def history_states(cortex: Cortex, gene: Gene) -> list[StateVector]:
    """The states the gene was decided on and experienced, oldest first, deduplicated,
    the last MAX_ADAPT_STATES of them (the order is fixed, so a resumed search sees the
    same states as the one it resumes)."""
    seen: dict[bytes, StateVector] = {}
    dated: list[tuple[int, str, int, StateVector]] = []
    for decision in cortex.decisions(gene.id):
        for j, state in enumerate(decision.states):
            dated.append((decision.decided_at, decision.id, j, state))
    for exp in cortex.experiences_for(gene.id):
        dated.append((exp.observed_at, exp.id, 0, exp.state))
    dated.sort(key=lambda item: item[:3])
    for *_, state in dated:
        if state.domain == gene.domain:
            seen.setdefault(canonical.encode(state.to_plain()), state)
    return list(seen.values())[-MAX_ADAPT_STATES:]
