"""Reading one Modbus device (TCP or RTU) through a planned set of block reads.

The transport (modbus_tcp or modbus_rtu) moves registers; this module decides what to ask for,
splits blocks the device refuses and remembers the working plan, decodes every field with the one
codec, and keeps the device within its deadline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
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


class Transport(Protocol):
    def read(self, unit: int, fncode: int, address: int, count: int, timeout: float) -> list[int]: ...

    def close(self) -> None: ...


@dataclass
class DeviceResult:
    values: dict[str, Any] = field(default_factory=dict)
    status: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    failed: bool = False  # nothing could be read: the device is down
    item_errors: dict[str, str] = field(default_factory=dict)  # field or status key -> why it has no value
    raw: dict[str, list[int]] | None = None  # field or status key -> its registers, when asked for (device test)


class ModbusDevice:
    """Reads one device; keeps its request plan across cycles."""

    def __init__(self, device: Device, transport: Transport):
        self.device = device
        self.transport = transport
        self.fields: dict[str, ModbusField] = dict(device.fields)
        self.status = {f"_s/{s.key}": s for s in device.status}
        offset = device.register_offset
        items = [planner.Item(k, f.fncode, f.register + offset, f.words, f.barrier) for k, f in self.fields.items()]
        items += [planner.Item(k, s.fncode, s.register + offset, s.words) for k, s in self.status.items()]
        if any(not (0 <= i.address and i.end <= 0x10000) for i in items):
            raise ValueError(f"register_offset {offset} moves registers outside 0..65535")
        merge = device.address.get("merge", True) is not False
        max_regs = int(device.address.get("max_registers", planner.MAX_REGISTERS))
        max_gap = int(device.address.get("max_gap", planner.DEFAULT_MAX_GAP.get(device.reading_type, 0)))
        # merge: false gives one request per field (identical requests are still read once)
        self.blocks = planner.plan(items, max_regs, max_gap) if merge else planner.one_per_request(items)

    def read(self, deadline: float, keep_raw: bool = False) -> DeviceResult:
        """One read of every field and status item; with keep_raw also the registers of each."""
        res = DeviceResult(raw={} if keep_raw else None)
        answered = succeeded = False
        queue = list(self.blocks)
        new_plan: list[planner.Block] = []
        while queue:
            block = queue.pop(0)
            left = deadline - time.monotonic()
            if left <= 0:
                res.errors.append(f"deadline passed before registers {block.address}..{block.end - 1}")
                res.item_errors.update((i.key, "deadline passed; not read") for b in [block, *queue] for i in b.items)
                new_plan.append(block)
                new_plan.extend(queue)
                break
            try:
                regs = self._read_block(block, min(self.device.timeout, left))
                res.requests += 1
            except ModbusException as exc:
                res.requests += 1
                answered = True
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
                new_plan.append(block)
                if not answered:  # the first request went unanswered: the device is down
                    res.failed = True
                    res.errors.append(str(exc))
                    new_plan.extend(queue)
                    break
                parts = planner.split(block)
                if len(parts) > 1:  # some devices stay silent instead of refusing a block
                    new_plan.pop()
                    queue[0:0] = parts
                    continue
                self._fail_items(block, str(exc), res)
                continue
            except LinkError as exc:
                res.requests += 1
                new_plan.append(block)
                self._fail_items(block, str(exc), res)
                if not answered:
                    res.failed = True
                    new_plan.extend(queue)
                    break
                continue
            answered = succeeded = True
            new_plan.append(block)
            self._decode_block(block, regs, res)
        self.blocks = new_plan
        if not succeeded and self.blocks:
            res.failed = True  # nothing could be read: counts as down (backoff), whatever the reason
        return res

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
            if res.raw is not None:
                res.raw[item.key] = raw
            if item.key in self.fields:
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

    def plan_summary(self) -> list[tuple[int, int, int]]:
        return [(b.fncode, b.address, b.count) for b in self.blocks]
