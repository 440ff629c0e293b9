"""Give a factory-fresh serial sensor (slave id 1) the address an AMMP site config expects
(reference section 5.6: the commands `imt_sensor_address`, `holykell_sensor_address_7|8`, also in
the web UI). Each returns upstream's result dict {step: outcome}; the key "Error" marks a failure.

IMT irradiance sensor, 1 -> 2, raw frames at 9600 baud (5 s answer timeout):
    01 46 04 02 63 0C         vendor function 0x46: set address 2 (the sensor echoes it)
    01 08 00 01 00 00 B1 CB   diagnostics 0x08/0x0001: restart communications (echoed)
    then slave 2, register 0, 1 word, fc4 (irradiance) as a check.
Holykell HPT604 level sensor, 1 -> 7 or 8, Modbus RTU at 9600 baud (3 s timeout):
    1. slave <target>: read 40 registers from 0 (fc3); any answer means the address is taken: stop
    2. slave 1: write register 80 = target (fc6); after 1 s slave <target>: register 64 = 49087 (save)
    3. if the sensor refuses step 2 (illegal function/address/value): slave 1: register 18 = target,
       after 1 s slave <target>: register 78 = 1 (the other firmware's address and save registers)
    4. slave <target>: read register 2 (fc3), the level in mm
"""

from __future__ import annotations

import logging
import os
import select
import time

import minimalmodbus
import serial as pyserial

from ...readers.modbus_rtu import RtuLine

log = logging.getLogger(__name__)

BAUDRATE = 9600
IMT_SET_ADDRESS_2 = bytes.fromhex("01460402630c")
IMT_RESTART_COMMS = bytes.fromhex("010800010000b1cb")
HOLYKELL_SAVE = 49087
HOLYKELL_TARGETS = (7, 8)


def _open(port: str, timeout: float) -> RtuLine:
    line = RtuLine(port, baudrate=BAUDRATE, timeout=0.05, write_timeout=2.0, exclusive=True)
    line.read_timeout = timeout
    return line


def _answer(line: RtuLine, timeout: float, quiet: float = 0.1) -> bytes:
    """What arrives within `timeout`, ending once the line is quiet for `quiet` after the first byte."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        wait = deadline - time.monotonic() if not data else min(quiet, deadline - time.monotonic())
        if wait <= 0:
            return data
        ready, _, _ = select.select([line.fd], [], [], wait)
        if not ready:
            return data
        chunk = os.read(line.fd, 4096)
        if not chunk:
            return data
        data += chunk


def imt_sensor_address(port: str, timeout: float = 5.0) -> dict:
    result: dict = {}
    try:
        line = _open(port, timeout)
    except (pyserial.SerialException, OSError, ValueError) as exc:
        return {"Error": f"cannot open {port}: {exc}"}
    try:
        line.discard_input()
        line.write(IMT_SET_ADDRESS_2)
        result[f"Address change response (expect {IMT_SET_ADDRESS_2.hex()})"] = _answer(line, timeout).hex()
        line.write(IMT_RESTART_COMMS)
        result[f"Comms restart response (expect {IMT_RESTART_COMMS.hex()})"] = _answer(line, timeout).hex()
        inst = minimalmodbus.Instrument(line, 2, close_port_after_each_call=False)
        inst.clear_buffers_before_each_transaction = True
        try:
            result["Data read test from address 2"] = inst.read_registers(0, 1, functioncode=4)
        except (minimalmodbus.ModbusException, pyserial.SerialException, OSError) as exc:
            result["Error"] = f"Exception: {exc}"
    except (pyserial.SerialException, OSError) as exc:
        result["Error"] = f"serial port {port} failed: {exc}"
    finally:
        line.close()
    return result


def holykell_sensor_address(
    port: str, target: int, timeout: float = 3.0, settle: float = 1.0, original: int = 1
) -> dict:
    if target not in HOLYKELL_TARGETS:
        return {"Error": f"target slave id {target} is not one of {HOLYKELL_TARGETS}"}
    result: dict = {}
    try:
        line = _open(port, timeout)
    except (pyserial.SerialException, OSError, ValueError) as exc:
        return {"Error": f"cannot open {port}: {exc}"}
    inst = minimalmodbus.Instrument(line, original, close_port_after_each_call=False)
    inst.clear_buffers_before_each_transaction = True

    def on(slave: int) -> minimalmodbus.Instrument:
        inst.address = slave
        return inst

    try:
        try:
            on(target).read_registers(0, 40, functioncode=3)
        except minimalmodbus.NoResponseError:
            result[f"Check on slave {target}"] = "Slave available, assigning the device to it"
        except minimalmodbus.ModbusException as exc:
            result["Error"] = f"Failed to check if slave {target} available. Exception {exc}"
            return result
        else:
            result["Error"] = f"Other device already detected on slave {target}"
            return result
        try:
            on(original).write_register(80, target, functioncode=6)
            time.sleep(settle)
            on(target).write_register(64, HOLYKELL_SAVE, functioncode=6)
            result["Address change"] = f"register 80 = {target}, saved with register 64 = {HOLYKELL_SAVE}"
        except minimalmodbus.IllegalRequestError as exc:
            log.info("Holykell refused register 80/64 (%s); trying registers 18/78", exc)
            try:
                on(original).write_register(18, target, functioncode=6)
                time.sleep(settle)
                on(target).write_register(78, 1, functioncode=6)
                result["Address change"] = f"register 18 = {target}, saved with register 78 = 1 (after: {exc})"
            except minimalmodbus.ModbusException as exc2:
                result["Error"] = f"Unable to assign slave ID to {target}. Exception {exc2}"
                return result
        except minimalmodbus.ModbusException as exc:
            result["Error"] = f"Unable to assign slave ID to {target}. Exception {exc}"
            return result
        time.sleep(settle)
        try:
            result[f"Success, fuel level read from slave {target} (mm)"] = on(target).read_registers(
                2, 1, functioncode=3
            )
        except minimalmodbus.ModbusException as exc:
            result["Error"] = f"Address set, but no reading from slave {target}. Exception {exc}"
    except (pyserial.SerialException, OSError) as exc:
        result["Error"] = f"serial port {port} failed: {exc}"
    finally:
        line.close()
    return result
