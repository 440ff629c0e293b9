"""Modbus request planning: merge the fields of one device into few block reads.

Rules: fields with the same function code merge into blocks of at most `max_registers` (125, the
Modbus limit, lower for devices that need it); a gap between two fields is read along only when it is at
most `max_gap` registers (default 32 on TCP where a request costs a round trip, 8 on RTU where each
gap register costs airtime); a block never spans a field marked `barrier`; identical requests are read
once. When a device answers a merged block with an exception (illegal address), the block is split
(first without gaps, then field by field) and the device keeps the working plan. Tied items (a field
and its scale factor, `ties`) are planned as one group, read in one request whatever the gap between
them when the group fits in `max_registers`; without ties the plan is exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_REGISTERS = 125
DEFAULT_MAX_GAP = {"modbustcp": 32, "modbusrtu": 8}


@dataclass(frozen=True, slots=True)
class Item:
    """One thing to read: a field or a status item (key), at its absolute address."""

    key: str
    fncode: int
    address: int
    words: int
    barrier: bool = False

    @property
    def end(self) -> int:
        return self.address + self.words


@dataclass(slots=True)
class Block:
    fncode: int
    address: int
    count: int
    items: list[Item] = field(default_factory=list)
    gapless: bool = False  # already split down to runs without gap registers

    @property
    def end(self) -> int:
        return self.address + self.count

    def registers_for(self, item: Item, registers: list[int]) -> list[int]:
        start = item.address - self.address
        return registers[start : start + item.words]


def _units(items: list[Item], ties: dict[str, str] | None, max_registers: int) -> list[list[Item]]:
    """Items grouped into what must be read in one request: each item alone, or, with `ties`, an item
    with everything tied to it (a scale factor with every field it scales). A group that spans more
    than max_registers, or has a barrier inside, falls back to its items alone."""
    if not ties:
        return [[it] for it in items]
    parent = {it.key: it.key for it in items}

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in ties.items():
        if a in parent and b in parent:
            parent[root(a)] = root(b)
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(root(it.key), []).append(it)
    units: list[list[Item]] = []
    for group in groups.values():
        group.sort(key=lambda i: (i.address, -i.words))
        span = max(i.end for i in group) - group[0].address
        fncodes = {i.fncode for i in group}
        if span > max_registers or len(fncodes) > 1 or any(i.barrier for i in group[1:]):
            units.extend([it] for it in group)
        else:
            units.append(group)
    return units


def plan(
    items: list[Item], max_registers: int = MAX_REGISTERS, max_gap: int = 0, ties: dict[str, str] | None = None
) -> list[Block]:
    """Merge items into blocks (see module doc). Items larger than max_registers get a block each.
    `ties` (item key -> key of the item it needs, e.g. a field and its scale factor): tied items are
    read in one request whenever they fit in max_registers together, whatever the gap between them."""
    blocks: list[Block] = []
    by_fn: dict[int, list[list[Item]]] = {}
    for unit in _units(items, ties, max_registers):
        by_fn.setdefault(unit[0].fncode, []).append(unit)
    for fncode in sorted(by_fn):
        current: Block | None = None
        for unit in sorted(by_fn[fncode], key=lambda u: (u[0].address, -(max(i.end for i in u) - u[0].address))):
            first = unit[0]
            unit_end = max(i.end for i in unit)
            inner_gap = len(unit) > 1 and _has_gap(unit)
            if current is not None:
                gap = first.address - current.end
                new_end = max(current.end, unit_end)
                if gap <= max_gap and not first.barrier and new_end - current.address <= max_registers:
                    current.items.extend(unit)
                    current.count = new_end - current.address
                    current.gapless = current.gapless and not inner_gap
                    continue
            current = Block(fncode, first.address, unit_end - first.address, list(unit))
            current.gapless = max_gap == 0 and not inner_gap
            blocks.append(current)
    return blocks


def _has_gap(items: list[Item]) -> bool:
    """Do these items (sorted by address) leave a register between them unread?"""
    end = items[0].end
    for it in items[1:]:
        if it.address > end:
            return True
        end = max(end, it.end)
    return False


def split(block: Block) -> list[Block]:
    """Smaller blocks for a block the device refused: gapless runs first, then one per distinct request."""
    if not block.gapless and len(block.items) > 1:
        parts = plan(block.items, max_registers=block.count, max_gap=0)
        if len(parts) > 1:
            return parts
    return one_per_request(block.items)


def one_per_request(items: list[Item]) -> list[Block]:
    """A block per distinct (fncode, address, words): no merging, identical requests read once."""
    singles: dict[tuple[int, int, int], Block] = {}
    for it in items:
        b = singles.get((it.fncode, it.address, it.words))
        if b is None:
            singles[(it.fncode, it.address, it.words)] = Block(it.fncode, it.address, it.words, [it], gapless=True)
        else:
            b.items.append(it)
    return list(singles.values())


def gapless_runs(block: Block) -> list[Block]:
    """The block cut into runs without gap registers (itself, marked gapless, when it has none)."""
    if block.gapless:
        return [block]
    parts = plan(block.items, max_registers=block.count, max_gap=0)
    for p in parts:
        p.gapless = True
    return parts


def same_request(a: Block, b: Block) -> bool:
    return (a.fncode, a.address, a.count) == (b.fncode, b.address, b.count)


def to_json(blocks: list[Block]) -> list[list]:
    """A plan as JSON: [[fncode, address, count, gapless, [item keys]], ...]."""
    return [[b.fncode, b.address, b.count, b.gapless, [i.key for i in b.items]] for b in blocks]


def from_json(data: object, items: dict[str, Item], max_registers: int = MAX_REGISTERS) -> list[Block] | None:
    """A plan stored by to_json, or None when it does not fit these items: every block a valid read of
    at most max_registers holding only known items of its function code within its registers, and
    every item in some block."""
    if not isinstance(data, list):
        return None
    blocks: list[Block] = []
    covered: set[str] = set()
    for entry in data:
        if not (isinstance(entry, list) and len(entry) == 5 and isinstance(entry[4], list)):
            return None
        fncode, address, count, gapless, keys = entry
        if not all(type(v) is int for v in (fncode, address, count)) or not isinstance(gapless, bool):
            return None
        if not (1 <= count <= max_registers and 0 <= address and address + count <= 0x10000) or not keys:
            return None
        block = Block(fncode, address, count, [], gapless)
        for key in keys:
            item = items.get(key) if isinstance(key, str) else None
            if item is None or item.fncode != fncode or item.address < address or item.end > block.end:
                return None
            block.items.append(item)
            covered.add(key)
        blocks.append(block)
    return blocks if covered == set(items) else None
