"""Stateful property test: after any sequence of puts, edits, status changes and deletes,
the Cortex's heads equal a plain dict model and every index agrees with the heads."""

from __future__ import annotations

import shutil
import tempfile

from gd_testkit import key_from_int, make_gene
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gd.genome import Gene, GeneStatus
from gd.node.store.cortex import Cortex

KEYS = [key_from_int(i) for i in (1, 2)]
NAMES = [f"g{i}" for i in range(6)]


class CortexModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.cortex = Cortex.open(self.dir)
        self.model: dict[str, Gene] = {}
        self.last_seq = 0

    def teardown(self) -> None:
        self.cortex.close()
        shutil.rmtree(self.dir)

    @rule(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True),
          key=st.sampled_from(KEYS), domain=st.sampled_from(["turbofan", "loan"]))
    def put_batch(self, names: list[str], key, domain: str) -> None:
        batch = []
        for name in names:
            gene = make_gene(key, name, domain=domain)
            if gene.id in self.model:
                continue
            batch.append(gene)
        self.cortex.put_genes(batch)
        for gene in batch:
            self.model[gene.id] = gene

    @rule(data=st.data(), threshold=st.floats(0, 100))
    def edit(self, data: st.DataObject, threshold: float) -> None:
        if not self.model:
            return
        gid = data.draw(st.sampled_from(sorted(self.model)))
        old = self.model[gid]
        new = old.edited(data.draw(st.sampled_from(KEYS)), hlc=old.hlc + 1,
                         action=data.draw(st.sampled_from(["inspect", "overhaul"])))
        self.cortex.put_gene(new)
        self.model[gid] = new

    @rule(data=st.data(), status=st.sampled_from(list(GeneStatus)))
    def set_status(self, data: st.DataObject, status: GeneStatus) -> None:
        if not self.model:
            return
        gid = data.draw(st.sampled_from(sorted(self.model)))
        self.cortex.set_status(gid, status)
        self.model[gid] = self.model[gid].with_local(status=status)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        if not self.model:
            return
        gid = data.draw(st.sampled_from(sorted(self.model)))
        assert self.cortex.delete_gene(gid) is not None
        del self.model[gid]

    @invariant()
    def heads_match_model(self) -> None:
        assert {g.id: g for g in self.cortex.genes()} == self.model

    @invariant()
    def indexes_are_consistent(self) -> None:
        assert self.cortex.check_indexes() == []
        for status in GeneStatus:
            expected = {gid for gid, g in self.model.items() if g.status == status}
            assert {g.id for g in self.cortex.genes(status=status)} == expected

    @invariant()
    def feed_only_grows(self) -> None:
        seq = self.cortex.last_seq
        assert seq >= self.last_seq
        self.last_seq = seq


CortexModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25,
                                         deadline=None)
TestCortexModel = CortexModel.TestCase
