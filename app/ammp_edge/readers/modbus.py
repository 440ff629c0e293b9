"""Reading one Modbus device (TCP or RTU) through a planned set of block reads.

The transport (modbus_tcp or modbus_rtu) moves registers; this module decides what to ask for,
splits blocks the device refuses and remembers the working plan, decodes every field with the one
codec, and keeps the device within its deadline.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import zlib
from dataclasses import astuple, dataclass, field
from typing import Any, Protocol

from ..core import codec
from ..core.config import Device
from ..core.drivers import ModbusField
from . import planner

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
SPLIT_ON = (2, 3)  # exceptions that mean "this block is not all readable"


class ModbusException(Exception):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


class DeviceSilent(Exception):
    """No (valid) answer within the timeout."""


class LinkError(Exception):
    """The connection failed or the answer was garbage; the transport was reset."""


class Interrupted(Exception):
    """A wait was cut short because the bus is stopping (`Transport.interrupt` was set)."""


INTERRUPT_SLICE = 0.25  # seconds: a transport waiting on a device looks at its interrupt this often
STOP_GRACE = 1.5  # seconds a stopping bus may still spend on its cycle (a request in flight, a short cycle)


class Interrupt(Protocol):
    def is_set(self) -> bool: ...


class GracefulStop:
    """The bus's stop event as its transports see it: set once `stop` has been set for `grace`
    seconds. A request in flight, and the rest of a short cycle, may still finish and be committed;
    no wait on a silent device outlasts the grace (plus INTERRUPT_SLICE)."""

    def __init__(self, stop: threading.Event, grace: float = STOP_GRACE):
        self.stop, self.grace = stop, grace
        self._since: float | None = None

    def is_set(self) -> bool:
        if not self.stop.is_set():
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return now - self._since >= self.grace


class Transport(Protocol):
    """Moves registers. `interrupt` (set by the bus) ends any wait within INTERRUPT_SLICE with
    Interrupted, so SIGTERM stops a bus within seconds whatever the devices' timeouts."""

    interrupt: Interrupt | None

    def read(self, unit: int, fncode: int, address: int, count: int, timeout: float) -> list[int]: ...

    def close(self) -> None: ...


class PlanStore(Protocol):
    """Where a device's working plan is kept across restarts of its bus (the bus's KV cache)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


@dataclass
class DeviceResult:
    values: dict[str, Any] = field(default_factory=dict)
    status: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    failed: bool = False  # nothing could be read: the device is down
    interrupted: bool = False  # the bus is stopping: the read was cut short (not a failure of the device)
    item_errors: dict[str, str] = field(default_factory=dict)  # field or status key -> why it has no value
    raw: dict[str, list[int]] | None = None  # field or status key -> its registers, when asked for (device test)


class ModbusDevice:
    """Reads one device; keeps its request plan across cycles (and, given a PlanStore, across restarts).

    A device that refuses a merged block (an exception) gets it split. A device that stays silent on
    a block is asked for one field alone (the probe) before it is called down: when that answers, the
    device is alive and the silent block is split like a refused one; as a device that is silent on a
    block with gaps is likely silent on every read that touches a register it lacks, every other block
    with gaps is cut into its gapless runs at once. A device found down starts its next attempt with
    the probe, so a dead device costs one timeout per attempt (two on the first).
    """

    def __init__(self, device: Device, transport: Transport, plans: PlanStore | None = None, plan_key: str = ""):
        self.device = device
        self.transport = transport
        self.fields: dict[str, ModbusField] = dict(device.fields)
        self.status = {f"_s/{s.key}": s for s in device.status}
        # scale factor fields (a field's `scale_factor`): read with it, never published unless asked for
        self.scalers: dict[str, ModbusField] = {}
        self.scaled_by: dict[str, str] = {}  # field or scaler key -> the key of its scale factor item
        for key, fld in self.fields.items():
            while fld.scale_factor is not None:
                sf_key = f"_sf/{fld.scale_factor.name}"
                self.scaled_by[key] = sf_key
                self.scalers[sf_key] = fld.scale_factor
                key, fld = sf_key, fld.scale_factor
        # the driver's `expect`: fields that must read these values, or nothing of the device is published
        self.guards: dict[str, tuple[ModbusField, Any]] = {}
        for fld in self.fields.values():
            for guard, value in fld.expects:
                self.guards[f"_ex/{guard.name}"] = (guard, value)
        offset = device.register_offset
        every = {**self.fields, **self.scalers, **{k: g for k, (g, _) in self.guards.items()}}
        items = [planner.Item(k, f.fncode, f.register + offset, f.words, f.barrier) for k, f in every.items()]
        items += [planner.Item(k, s.fncode, s.register + offset, s.words) for k, s in self.status.items()]
        if any(not (0 <= i.address and i.end <= 0x10000) for i in items):
            raise ValueError(f"register_offset {offset} moves registers outside 0..65535")
        self.items = {i.key: i for i in items}
        merge = device.address.get("merge", True) is not False
        self.max_registers = int(device.address.get("max_registers", planner.MAX_REGISTERS))
        max_gap = int(device.address.get("max_gap", planner.DEFAULT_MAX_GAP.get(device.reading_type, 0)))
        # merge: false gives one request per field (identical requests are still read once)
        ties = self.scaled_by or None  # a field and its scale factor: in one request where they fit
        self.blocks = (
            planner.plan(items, self.max_registers, max_gap, ties) if merge else planner.one_per_request(items)
        )
        basis = json.dumps([device.reading_type, planner.to_json(self.blocks), [astuple(i) for i in items]])
        self.digest = f"{zlib.crc32(basis.encode()):08x}"  # the plan as planned: a changed driver or config relearns
        self._scaled_raw: dict[str, list[int]] = {}  # scaled items and checks of the read under way
        self.probe_first = False  # found down: the next attempt starts with the probe
        self.probe_key: str | None = None  # an item that answered (the first choice of a probe)
        self._probe_turn = 0  # silent probes since the last answer: the next probe tries another item
        self.plans, self.plan_key = plans, plan_key
        self._saved: Any = None
        self._load_plan()

    # -- the working plan, kept ----------------------------------------------------------------
    def _load_plan(self) -> None:
        if self.plans is None:
            return
        try:
            stored = self.plans.get(self.plan_key)
        except (OSError, ValueError, sqlite3.Error) as exc:
            log.warning("[%s] stored plan not readable: %s", self.device.key, exc)
            return
        if not isinstance(stored, dict) or stored.get("digest") != self.digest:
            return  # none, or learned for another driver or config
        blocks = planner.from_json(stored.get("blocks"), self.items, self.max_registers)
        if blocks is None:
            log.warning("[%s] stored plan does not fit the device's fields; planning again", self.device.key)
            return
        self.blocks = blocks
        probe = stored.get("probe")
        self.probe_key = probe if isinstance(probe, str) and probe in self.items else None
        self._saved = stored
        log.info("[%s] using its learned plan: %d request(s)", self.device.key, len(blocks))

    def _save_plan(self) -> None:
        if self.plans is None:
            return
        value = {"digest": self.digest, "blocks": planner.to_json(self.blocks), "probe": self.probe_key}
        if value == self._saved:
            return
        try:
            self.plans.set(self.plan_key, value)
            self._saved = value
        except (OSError, ValueError, sqlite3.Error) as exc:
            log.warning("[%s] plan not stored: %s", self.device.key, exc)

    # -- the probe ---------------------------------------------------------------------------------
    def _probe_block(self, silent: planner.Block | None = None) -> planner.Block | None:
        """A read of one item alone, other than the request `silent` that got no answer; None when
        there is none. An item that answered before comes first; each silent probe moves on to the
        next candidate (the first item of each block, then the others)."""
        order = [self.probe_key] if self.probe_key else []
        order += [b.items[0].key for b in self.blocks] + list(self.items)
        order.sort(key=lambda k: k not in self.fields)  # fields first (stable): a status item is read later anyway
        candidates: list[planner.Item] = []
        for key in dict.fromkeys(order):
            item = self.items[key]
            single = planner.Block(item.fncode, item.address, item.words, [item], gapless=True)
            if silent is None or not planner.same_request(single, silent):
                candidates.append(item)
        if not candidates:
            return None
        item = candidates[self._probe_turn % len(candidates)]
        return planner.Block(item.fncode, item.address, item.words, [item], gapless=True)

    def _split_silent(self, block: planner.Block, queue: list[planner.Block]) -> list[planner.Block]:
        """The parts of a block the (answering) device stayed silent on; when the first split is into
        gapless runs, every queued block with gaps is cut into its runs too (see the class doc)."""
        runs = planner.gapless_runs(block)
        if len(runs) == 1:
            return planner.split(block)
        cut = [run for b in queue for run in planner.gapless_runs(b)]
        if len(cut) > len(queue):
            log.info(
                "[%s] silent on a read with gap registers: reading gapless runs (%d requests instead of %d)",
                self.device.key,
                len(cut),
                len(queue),
            )
        queue[:] = cut
        return runs

    # -- one read ----------------------------------------------------------------------------------
    def read(self, deadline: float, keep_raw: bool = False) -> DeviceResult:
        """One read of every field and status item; with keep_raw also the registers of each."""
        res = DeviceResult(raw={} if keep_raw else None)
        self._scaled_raw = {}  # scaled items: decoded once their scale factor is known
        answered = succeeded = False
        queue = list(self.blocks)
        probe = self._probe_block() if self.probe_first else None
        pending: planner.Block | None = None  # the silent block a probe is deciding about
        if probe is not None:
            queue.insert(0, probe)
        new_plan: list[planner.Block] = []

        def unread(blocks: list[planner.Block], why: str) -> None:
            rest = [b for b in blocks if b is not probe]
            res.item_errors.update((i.key, why) for b in rest for i in b.items)
            new_plan.extend(rest)

        while queue:
            block = queue.pop(0)
            left = deadline - time.monotonic()
            if left <= 0:
                res.errors.append(f"deadline passed before registers {block.address}..{block.end - 1}")
                unread([*([pending] if pending else []), block, *queue], "deadline passed; not read")
                break
            try:
                regs = self._read_block(block, min(self.device.timeout, left))
                res.requests += 1
            except Interrupted:
                res.interrupted = True
                res.errors.append(f"the bus is stopping: registers {block.address}.. not read")
                unread([*([pending] if pending else []), block, *queue], "the bus is stopping; not read")
                break
            except ModbusException as exc:
                res.requests += 1
                answered = True
                if block is probe:  # it answers (with an exception for that item): the plan decides the rest
                    self._after_probe(pending, queue, new_plan, res)
                    pending = None
                    continue
                parts = planner.split(block) if exc.code in SPLIT_ON else [block]
                if len(parts) > 1:
                    log.info(
                        "[%s] fc%d %d..%d refused (%s): splitting into %d requests",
                        self.device.key,
                        block.fncode,
                        block.address,
                        block.end - 1,
                        exc,
                        len(parts),
                    )
                    queue[0:0] = parts
                    continue
                new_plan.append(block)
                self._fail_items(block, str(exc), res)
                continue
            except DeviceSilent as exc:
                if block is probe:  # nothing answers: the device is down
                    res.failed = True
                    alone = block.items[0].key
                    res.errors.append(f"{exc}; {alone} alone: no answer either" if pending else f"{exc} ({alone})")
                    self.probe_key, self._probe_turn = None, self._probe_turn + 1
                    unread([*([pending] if pending else []), *queue], str(exc))
                    break
                if not answered and probe is None:
                    probe = self._probe_block(block)  # does it answer at all?
                    if probe is not None:
                        pending = block
                        queue.insert(0, probe)
                        continue
                if not answered:  # the first request went unanswered and nothing else can tell: down
                    res.failed = True
                    res.errors.append(str(exc))
                    unread([block, *queue], str(exc))
                    break
                parts = self._split_silent(block, queue)
                if len(parts) > 1:  # some devices stay silent instead of refusing a block
                    log.info(
                        "[%s] fc%d %d..%d not answered: splitting into %d requests",
                        self.device.key,
                        block.fncode,
                        block.address,
                        block.end - 1,
                        len(parts),
                    )
                    queue[0:0] = parts
                    continue
                new_plan.append(block)
                self._fail_items(block, str(exc), res)
                continue
            except LinkError as exc:
                res.requests += 1
                if block is not probe:
                    new_plan.append(block)
                    self._fail_items(block, str(exc), res)
                if not answered:
                    res.failed = True
                    if block is probe:
                        res.errors.append(str(exc))
                    unread([*([pending] if pending else []), *queue], str(exc))
                    break
                continue
            answered = succeeded = True
            if block is not probe or block.items[0].key in self.fields:  # a status item is read with its block
                self._decode_block(block, regs, res)
            if self.probe_key is None:
                self.probe_key = block.items[0].key
            self._probe_turn = 0
            if block is probe:
                self._after_probe(pending, queue, new_plan, res)
                pending = None
            else:
                new_plan.append(block)
        self._decode_scaled(res)
        self.blocks = new_plan
        if not succeeded and self.blocks:
            res.failed = True  # nothing could be read: counts as down (backoff), whatever the reason
        if not res.interrupted:
            self.probe_first = res.failed
            self._save_plan()
        return res

    def _after_probe(
        self,
        pending: planner.Block | None,
        queue: list[planner.Block],
        new_plan: list[planner.Block],
        res: DeviceResult,
    ) -> None:
        """The probe was answered: the device is alive. The silent block it was asked about is split
        (or, when it cannot be split, its items fail)."""
        if pending is None:
            return
        parts = self._split_silent(pending, queue)
        if len(parts) > 1:
            log.info(
                "[%s] fc%d %d..%d not answered, but the device answers: splitting into %d requests",
                self.device.key,
                pending.fncode,
                pending.address,
                pending.end - 1,
                len(parts),
            )
            queue[0:0] = parts
        else:
            new_plan.append(pending)
            self._fail_items(pending, f"no answer within {self.device.timeout:.1f} s", res)

    def _read_block(self, block: planner.Block, timeout: float) -> list[int]:
        regs = self.transport.read(self.device.unit_id, block.fncode, block.address, block.count, timeout)
        if len(regs) != block.count:
            raise LinkError(f"asked for {block.count} registers at {block.address}, got {len(regs)}")
        return regs

    def _fail_items(self, block: planner.Block, why: str, res: DeviceResult) -> None:
        names = ", ".join(i.key for i in block.items)
        res.errors.append(f"registers {block.address}..{block.end - 1} ({names}): {why}")
        res.item_errors.update((i.key, why) for i in block.items)

    def _decode_block(self, block: planner.Block, regs: list[int], res: DeviceResult) -> None:
        for item in block.items:
            raw = block.registers_for(item, regs)
            if res.raw is not None and item.key not in self.scalers and item.key not in self.guards:
                res.raw[item.key] = raw
            if item.key in self.scaled_by or item.key in self.scalers or item.key in self.guards:
                self._scaled_raw[item.key] = raw  # decoded after the read, with its scale factor
            elif item.key in self.fields:
                try:
                    res.values[item.key] = codec.decode_registers(raw, self.fields[item.key].spec)
                except codec.DecodeError as exc:
                    res.errors.append(f"{item.key}: {exc} (raw {raw})")
                    res.item_errors[item.key] = str(exc)
            else:
                status = self.status[item.key]
                try:
                    decoded = codec.decode_status(raw, status.spec)
                except codec.DecodeError as exc:
                    res.errors.append(f"status {status.key}: {exc}")
                    continue
                if decoded is None:
                    log.warning(
                        "[%s] status %s: value not in status_level_value_map; item dropped", self.device.key, status.key
                    )
                else:
                    res.status.append(decoded)

    def _decode_scaled(self, res: DeviceResult) -> None:
        """Fields with a scale factor: raw x 10**(the scale factor field's value). A scale factor that
        was not read, is not implemented (null) or is not a power of ten -10..10 gives no value (null
        for "not implemented"), never an unscaled one."""
        scalers: dict[str, tuple[Any, str | None]] = {}  # key -> (value, why there is none)

        def value_of(key: str) -> tuple[Any, str | None]:
            if key in scalers:
                return scalers[key]
            fld = self.scalers.get(key) or self.fields[key]
            raw = self._scaled_raw.get(key)
            if raw is None:
                out: tuple[Any, str | None] = (None, "not read")
            else:
                power: int | None = None
                sf_key = self.scaled_by.get(key)
                why = None
                if sf_key is not None:
                    sf_value, why = value_of(sf_key)
                    name = sf_key[4:]
                    if why is not None:
                        why = f"scale factor {name} {why}"
                    elif sf_value is not None:
                        try:
                            power = codec.check_power(sf_value, f"scale factor {name} =")
                        except codec.DecodeError as exc:
                            why = str(exc)
                if why is not None:
                    out = (None, why)
                elif sf_key is not None and power is None:
                    out = (None, None)  # the scale factor is "not implemented": so is the value
                else:
                    try:
                        out = (codec.decode_registers(raw, fld.spec, power), None)
                    except codec.DecodeError as exc:
                        out = (None, f"{exc} (raw {raw})")
            if key in self.scalers:
                scalers[key] = out
            return out

        for key in self.fields:
            if key not in self.scaled_by or key not in self._scaled_raw:
                continue  # not scaled, or not read (its block's error is reported)
            value, why = value_of(key)
            if why is None:
                res.values[key] = value
            else:
                res.errors.append(f"{key}: {why}")
                res.item_errors[key] = why
        self._check_guards(res)
        self._scaled_raw = {}
        for key in (*self.scalers, *self.guards):  # their errors are their fields' (reported with their block)
            res.item_errors.pop(key, None)

    def _check_guards(self, res: DeviceResult) -> None:
        """The driver's `expect`: every such field read, and read as expected, or nothing of this read is
        published (the device is not, or no longer, the one the driver was made for: e.g. a SunSpec
        device whose model chain changed with a firmware update)."""
        if not self.guards or not (res.values or res.status):
            return
        wrong = []
        for key, (guard, want) in self.guards.items():
            where = f"{guard.name} (register {guard.register + self.device.register_offset})"
            raw = self._scaled_raw.get(key)
            if raw is None:
                wrong.append(f"{where} not read")
                continue
            try:
                got = codec.decode_registers(raw, guard.spec)
            except codec.DecodeError as exc:
                wrong.append(f"{where}: {exc}")
                continue
            if got != want or type(got) is bool:
                wrong.append(f"{where} reads {got!r}, the driver expects {want!r}")
        if not wrong:
            return
        why = "not the device this driver was made for: " + "; ".join(wrong) + "; nothing of it is published"
        res.errors.append(why)
        for key in list(res.values):
            res.item_errors[key] = why
        res.values.clear()
        res.status.clear()
        if not res.interrupted:
            res.failed = True

    def plan_summary(self) -> list[tuple[int, int, int]]:
        return [(b.fncode, b.address, b.count) for b in self.blocks]
