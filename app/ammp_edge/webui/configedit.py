"""Changing the config from the web UI, through the one door (core.configdoor) every config takes.

Every change (upload, paste, device edit or add, restore) is handed to configdoor.submit with the
source "webui": the same parser and limits, the same `config_id` cut, the same problems and refusals
as a config from the cloud or `up --config`, the replaced config kept in `webui_previous_config` for
"restore". The web UI asks before it stores a config with errors (unless "apply despite errors", which
stores what every other door stores). On a node the AMMP cloud manages, the engineer chooses whether
the cloud's next config replaces the edit or the edit is kept until the cloud sends a new one.
"""

from __future__ import annotations

import json
import re

from ..core import config as cfg, configdoor, jsontext, keys, serialline
from ..core.configdoor import Say, Verdict
from ..core.problems import ConfigUnusable
from ..delivery.outputcheck import output_problems

DEVICE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def apply(
    store,
    raw: bytes,
    builtin: dict,
    anyway: bool = False,
    keep_local: bool = False,
    say: Say | None = None,
    detail: str | None = None,
) -> Verdict:
    """A config from the web UI through the one door; errors need `anyway`."""
    return configdoor.submit(
        store,
        raw,
        "webui",
        builtin,
        output_problems,
        detail=detail,
        confirm_errors=not anyway,
        keep_local=keep_local,
        say=say,
    )


def dumps(doc: dict) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def current_doc(store) -> dict:
    raw = store.get_raw(keys.CONFIG)
    if raw is None:
        return {"devices": {}, "readings": {}, "read_interval": 60}
    try:
        doc = jsontext.parse(raw)
    except ConfigUnusable as exc:
        raise ValueError(f"the stored config cannot be edited ({exc}); upload a new one") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("devices", {}), dict):
        raise ValueError("the stored config is not a JSON object")
    doc.setdefault("devices", {})
    if not isinstance(doc.setdefault("readings", {}), dict):
        doc["readings"] = {}
    return doc


def _int(form: dict, name: str, lo: int, hi: int) -> int:
    text = str(form.get(name, "")).strip()
    if not re.fullmatch(r"-?\d{1,7}", text):
        raise ValueError(f"{name}: {text!r} is not a whole number")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} is outside {lo}..{hi}")
    return value


def address_from_form(reading_type: str, form: dict, old: dict | None = None) -> dict:
    """The address of a device from form fields; keeps keys the form does not show."""
    addr = dict(old or {})
    if reading_type in ("modbustcp", "rawtcp"):  # rawtcp: unit_id is the device arg its schemas use
        host = str(form.get("host", "")).strip()
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", host):
            raise ValueError(f"host: {host!r} is not a host name or IP address")
        addr.update(host=host, port=_int(form, "port", 1, 65535), unit_id=_int(form, "unit_id", 0, 255))
    elif reading_type in ("modbusrtu", "serial", "rawserial"):
        dev = str(form.get("device", "")).strip()
        if not re.fullmatch(r"/dev/[A-Za-z0-9_./-]{1,64}", dev) or ".." in dev:
            raise ValueError(f"device: {dev!r} is not a serial port path such as /dev/ttyUSB0")
        parity = str(form.get("parity", "none"))
        if parity not in serialline.FORM_PARITIES:
            raise ValueError("parity: must be none, even or odd")
        stopbits = str(form.get("stopbits", "1"))
        if stopbits not in ("1", "2"):
            raise ValueError("stopbits: must be 1 or 2")
        addr.pop("unit_id", None)
        addr.update(
            device=dev,
            baudrate=_int(form, "baudrate", serialline.MIN_BAUDRATE, serialline.MAX_BAUDRATE),
            parity=parity,
            stopbits=int(stopbits),
        )
        if reading_type != "rawserial":
            addr["slaveaddr"] = _int(form, "slaveaddr", 0, 247)
    return addr


def driver_readings(doc: dict, key: str, driver: dict) -> None:
    """Replace the device's readings with one per field of its driver (`<device>_<field>`)."""
    readings = doc["readings"]
    for name in [n for n, r in readings.items() if isinstance(r, dict) and r.get("device") == key]:
        del readings[name]
    for var in driver.get("fields") or {}:
        readings[f"{key}_{var}"] = {"device": key, "var": var}


def edit_device(doc: dict, key: str, form: dict, drivers: dict) -> dict:
    """Apply an edit-device form to a config document (a copy is returned)."""
    doc = json.loads(json.dumps(doc))
    if key not in doc["devices"] or not isinstance(doc["devices"][key], dict):
        raise ValueError(f"devices.{key}: no such device")
    dev = doc["devices"][key]
    driver = str(form.get("driver", dev.get("driver", "")))
    if driver not in drivers:
        raise ValueError(f"driver: no driver named {driver!r}")
    changed_driver = driver != dev.get("driver")
    dev["driver"] = driver
    dev["enabled"] = form.get("enabled") in ("on", "true", "1", True)
    name = str(form.get("name", dev.get("name") or "")).strip()
    if name:
        dev["name"] = name[:200]
    rt = cfg.READING_TYPE_ALIASES.get(dev.get("reading_type"), dev.get("reading_type"))
    if rt in cfg.MODBUS_TYPES:
        dev["address"] = address_from_form(rt, form, dev.get("address") if isinstance(dev.get("address"), dict) else {})
    if changed_driver and form.get("all_fields", "on") in ("on", "true", "1", True):
        driver_readings(doc, key, drivers[driver])
    return doc


def add_device(doc: dict, key: str, form: dict, drivers: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    if not DEVICE_KEY.match(key):
        raise ValueError(f"device id: {key!r} may only contain letters, digits, '_', '.', '-' (at most 64)")
    if key in doc["devices"]:
        raise ValueError(f"devices.{key}: a device with this id exists already")
    rt = str(form.get("reading_type", "modbustcp"))
    if rt not in ("modbustcp", "modbusrtu"):
        raise ValueError("reading_type: must be modbustcp or modbusrtu")
    driver = str(form.get("driver", ""))
    if driver not in drivers:
        raise ValueError(f"driver: no driver named {driver!r}")
    vid = str(form.get("vendor_id", "")).strip() or key
    doc["devices"][key] = {
        "name": str(form.get("name", "")).strip()[:200] or key,
        "driver": driver,
        "reading_type": rt,
        "vendor_id": vid[:200],
        "enabled": True,
        "address": address_from_form(rt, form),
    }
    driver_readings(doc, key, drivers[driver])
    return doc
