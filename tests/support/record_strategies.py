"""Hypothesis strategies for the gene model's records."""

from __future__ import annotations

from hypothesis import strategies as st

from gd.genome import Codon, Experience, Gene, StateVector, Synapse
from gd.genome.decision import Decision, MotorResult
from gd.genome.gene import OPERATORS, ShareScope

slugs = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
features = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF,
                              blacklist_categories=("Cs",)), min_size=1, max_size=40
                ).filter(lambda s: s.strip() and "\x7f" not in s)
ids = st.from_regex(r"[a-f0-9]{32}", fullmatch=True)
param_values = st.one_of(st.booleans(), st.integers(-(2**63), 2**64 - 1), finite,
                         st.text(max_size=20).filter(lambda s: not any(ord(c) < 32 for c in s)
                                                     and "\x7f" not in s))


@st.composite
def codons(draw: st.DrawFn) -> Codon:
    terms = draw(st.dictionaries(features, finite.filter(lambda w: w != 0.0), min_size=1,
                                 max_size=3))
    return Codon(op=draw(st.sampled_from(OPERATORS)), threshold=draw(finite),
                 terms=tuple(terms.items()))


@st.composite
def genes(draw: st.DrawFn, key_pool: list) -> Gene:
    key = draw(st.sampled_from(key_pool))
    gene = Gene.create(
        key, domain=draw(slugs), name=draw(names), codons=draw(st.lists(codons(), min_size=1,
                                                                        max_size=4)),
        action=draw(slugs), purpose=draw(names),
        params=draw(st.dictionaries(features, param_values, max_size=3)),
        hlc=draw(st.integers(0, 2**64 - 1)),
        scope=ShareScope(forward=draw(st.booleans()), residency=draw(st.one_of(st.just(""),
                                                                               slugs))),
    )
    return gene


@st.composite
def states(draw: st.DrawFn, domain: str | None = None) -> StateVector:
    return StateVector(domain=domain or draw(slugs),
                       values=draw(st.dictionaries(features, finite, min_size=1, max_size=6)),
                       entity=draw(st.text(max_size=8).filter(
                           lambda s: not any(ord(c) < 32 or ord(c) == 127 for c in s))),
                       t=draw(st.integers(-(2**40), 2**40)))


synapses = st.tuples(
    ids, ids, st.sampled_from(["follows", "inhibits", "specialises"]), st.floats(0.0, 1.0)
).filter(lambda t: t[0] != t[1]).map(lambda t: Synapse(*t))


@st.composite
def experiences(draw: st.DrawFn) -> Experience:
    return Experience(gene_id=draw(ids), gene_version=draw(ids), state=draw(states()),
                      success=draw(st.booleans()), observed_at=draw(st.integers(0, 2**63)),
                      recorder=draw(slugs), reward=draw(st.one_of(st.none(), finite)))


@st.composite
def decisions(draw: st.DrawFn) -> Decision:
    results = tuple(
        MotorResult(motor=m, version="1", score=draw(st.floats(0, 1)), veto=draw(st.booleans()),
                    explanation=draw(names), details={"n": draw(st.integers(0, 1000))})
        for m in ("M_P", "M_N")
    )
    domain = draw(slugs)
    return Decision(gene_id=draw(ids), gene_version=draw(ids), domain=domain,
                    states=tuple(draw(st.lists(states(domain), min_size=1, max_size=3))),
                    seed=draw(st.integers(0, 2**63)), request={"epsilon": 0.01},
                    results=results, cp=draw(st.floats(0, 1)),
                    band=draw(st.sampled_from(["veto", "approve", "candidate"])),
                    verdict=draw(st.sampled_from(["veto", "approve", "adapt"])),
                    decided_at=draw(st.integers(0, 2**63)))
