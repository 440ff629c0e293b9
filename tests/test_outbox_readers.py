"""Property test of the outbox with the publisher's two readers (delivery/cursors.py): random
interleavings of put, live and backlog reads, acks (of some, and of everything held), sending again,
the gate reopening, restarts and the bound dropping the oldest, against a model of what must hold:

- ids never repeat and grow with every put;
- no record is skipped: a drain (reading live and backlog until both are dry) returns every record in
  the outbox that is not held, so nothing can be overtaken by both readers and forgotten;
- no reader returns a record twice in one pass (a pass ends when the record is sent again, the gate
  reopens or the publisher restarts); within a read, oldest first;
- an ack removes exactly the records it names, never another; nothing leaves the outbox but by an ack
  of a record that was read (sent), or by the bound dropping the oldest (counted).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ammp_edge.delivery.cursors import Readers
from ammp_edge.delivery.outbox import Outbox

MAX_COUNT = 12


class OutboxWithReaders(RuleBasedStateMachine):
    @initialize()
    def open(self):
        self.dir = Path(tempfile.mkdtemp(prefix="obx"))
        self.box = Outbox(self.dir, max_count=MAX_COUNT)
        self.readers = Readers(self.box)
        self.present: dict[int, int] = {}  # id -> serial: what the outbox must hold
        self.held: set[int] = set()  # read and not yet acked or released (in a group or in flight)
        self.returned: set[int] = set()  # returned in this pass
        self.last_given = 0
        self.serial = 0
        self.dropped = 0

    def teardown(self):
        if hasattr(self, "box"):
            self.box.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- writing --
    @rule(n=st.integers(1, 4))
    def put(self, n):
        for _ in range(n):
            self.serial += 1
            rid = self.box.put({"t": self.serial, "bus": "b"})
            assert rid > self.last_given, f"id {rid} given again or out of order (last {self.last_given})"
            self.last_given = rid
            self.present[rid] = self.serial
            if len(self.present) > MAX_COUNT:  # the bound drops the oldest
                oldest = min(self.present)
                del self.present[oldest]
                self.dropped += 1

    # -- reading --
    def _took(self, records, where):
        ids = [i for i, _ in records]
        assert ids == sorted(ids), f"{where} read out of order: {ids}"
        twice = set(ids) & self.returned
        assert not twice, f"{where} returned {twice} twice in one pass"
        for i, r in records:
            assert i in self.present, f"{where} returned {i}, which is not in the outbox"
            assert r["t"] == self.present[i], "a record came back with another record's content"
        self.returned.update(ids)
        self.held.update(ids)

    @rule(limit=st.integers(1, 6))
    def read_live(self, limit):
        self._took(self.readers.live(limit), "live")

    @rule(limit=st.integers(1, 6))
    def read_backlog(self, limit):
        self._took(self.readers.backlog(limit), "backlog")

    # -- acknowledging, sending again --
    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def ack_some(self, data):
        ids = data.draw(st.sets(st.sampled_from(sorted(self.held)), min_size=1))
        self._ack(ids)

    @precondition(lambda self: self.held)
    @rule()
    def ack_everything_held(self):
        self._ack(set(self.held))

    def _ack(self, ids):
        before = dict(self.box.read_from(None, 10_000))
        self.readers.done(ids)
        after = dict(self.box.read_from(None, 10_000))
        assert set(before) - set(after) == ids & set(before), "an ack removed another record than it named"
        for i in ids:
            self.present.pop(i, None)
        self.held -= ids

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def send_again(self, data):
        ids = data.draw(st.sets(st.sampled_from(sorted(self.held)), min_size=1))
        self.readers.release(ids)
        self.held -= ids
        self.returned -= ids

    # -- the gate, restarts --
    @rule(data=st.data())
    def gate_reopens(self, data):
        keep = data.draw(st.sets(st.sampled_from(sorted(self.held)))) if self.held else set()
        self.readers.reopen(keep=keep)
        self.held = set(keep)
        self.returned = set(keep)

    @rule()
    def restart(self):
        self.box.close()
        self.box = Outbox(self.dir, max_count=MAX_COUNT)
        self.readers = Readers(self.box)
        self.held, self.returned = set(), set()

    @rule()
    def drain(self):
        """Read both readers dry: every record not held comes out."""
        for _ in range(100):
            live, backlog = self.readers.live(5), self.readers.backlog(5)
            if not live and not backlog:
                break
            self._took(live, "live (drain)")
            self._took(backlog, "backlog (drain)")
        self.held &= set(self.present)  # records the bound dropped while held
        missing = set(self.present) - self.held
        assert not missing, f"records {sorted(missing)} skipped by both readers"

    @invariant()
    def outbox_matches_the_model(self):
        if not hasattr(self, "box"):
            return
        stored = dict(self.box.read_from(None, 10_000))
        assert {i: r["t"] for i, r in stored.items()} == self.present
        assert self.box.count() == len(self.present) and self.box.dropped() == self.dropped


OutboxWithReaders.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestOutboxWithReaders = OutboxWithReaders.TestCase
