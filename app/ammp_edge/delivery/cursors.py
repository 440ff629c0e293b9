"""The publisher's two readers over the outbox: live (records committed since the gate last opened)
and backlog (what was there when it opened, and what must be sent again), with what is held in between.

Invariant (tests/test_outbox_readers.py checks it against random interleavings): every record in the
outbox is either *held* (read, in a group or in flight, not yet acknowledged or released), or ahead of
the live cursor (id >= live_next), or inside the backlog's range (back_next <= id < back_end). So
whatever happens (restarts, reopening, sending again, drops by the bound) no record is passed by both
readers and forgotten, and no reader returns a held record a second time.

Why reading forward is enough: the outbox gives ids in commit order (outbox.py), so when the live reader
has seen id n, nothing below n can still appear; a read that returned fewer rows than asked ends at
the newest committed id.
"""

from __future__ import annotations

from collections.abc import Iterable

from .outbox import Outbox


class Readers:
    def __init__(self, outbox: Outbox):
        self.outbox = outbox
        self.live_next = 0
        self.back_next = 0
        self.back_end = 0
        self.held: set[int] = set()
        self.reopen()

    def reopen(self, keep: Iterable[int] = ()) -> None:
        """The gate (re)opened, or the publisher started: what is in the outbox now is backlog, what is
        committed from now on is live. `keep` stays held (in flight: it is confirmed or released later);
        everything else held before is let go and is read again by the backlog."""
        last = self.outbox.last_id()
        self.held = set(keep)
        self.live_next = last + 1
        first, _ = self.outbox.bounds()
        self.back_next = first if first is not None else last + 1
        self.back_end = last + 1

    def live(self, limit: int = 10_000) -> list[tuple[int, dict]]:
        """Records committed since the last call (up to limit), oldest first, none held."""
        records = self.outbox.read_from(self.live_next, limit)
        if records:
            self.live_next = records[-1][0] + 1
        return self._hold(records)

    def backlog(self, limit: int = 2000) -> list[tuple[int, dict]]:
        """The next records of the backlog range (up to limit), oldest first, none held."""
        if self.back_next >= self.back_end:
            return []
        records, self.back_next = self.outbox.read_range(self.back_next, self.back_end, limit)
        return self._hold(records)

    def backlog_left(self) -> bool:
        return self.back_next < self.back_end

    def _hold(self, records: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
        fresh = [(i, r) for i, r in records if i not in self.held]
        self.held.update(i for i, _ in fresh)
        return fresh

    def release(self, ids: Iterable[int]) -> None:
        """These were read but must be sent again (their message was not confirmed): the backlog reads
        them again."""
        ids = [i for i in ids if i in self.held]
        if not ids:
            return
        self.held.difference_update(ids)
        self.back_next = min(self.back_next, min(ids)) if self.backlog_left() else min(ids)
        self.back_end = max(self.back_end, max(ids) + 1)

    def done(self, ids: Iterable[int]) -> int:
        """Sent and confirmed (or nothing to send): remove exactly these from the outbox."""
        ids = list(ids)
        removed = self.outbox.ack(ids)
        self.held.difference_update(ids)
        return removed
