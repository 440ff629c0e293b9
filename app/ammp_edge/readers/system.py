"""The `sys` reader: the logger's own health (upstream sys_generic, sys_rpi3, sys_moxa) via psutil.

Only the calls listed in drivers.SYS_CALLS can be made; a driver cannot name any other function.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ..core import codec
from ..core.config import Device
from ..core.drivers import SysField
from .modbus import DeviceResult

log = logging.getLogger(__name__)


def _call(f: SysField) -> Any:
    fn = getattr(importlib.import_module(f.module), f.method)
    value = fn(**f.args)
    for key in f.keypath:
        value = value[key]
    return value


class SystemDevice:
    def __init__(self, device: Device):
        self.device = device

    def read(self, deadline: float) -> DeviceResult:
        res = DeviceResult()
        for var, f in self.device.fields.items():
            try:
                res.values[var] = codec.scale(_call(f), f.spec)
            except (KeyError, IndexError, TypeError, ValueError, OSError, AttributeError, codec.DecodeError) as exc:
                # e.g. no cpu_thermal sensor on this machine: the field is left out, as upstream
                res.errors.append(f"{var}: {f.module}.{f.method} {list(f.keypath)}: {type(exc).__name__}: {exc}")
        return res
