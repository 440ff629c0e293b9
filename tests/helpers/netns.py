"""Run a function in a private network namespace with multicast on loopback only.

`in_netns(fn, *args)` forks; the child unshares its network namespace (CLONE_NEWNET: as `unshare -n`),
brings lo up and routes 224.0.0.0/4 on it (`ip link set lo up`, `ip route add 224.0.0.0/4 dev lo`),
then calls fn. Its return value (or the exception it raised, with the traceback) comes back through a
pipe. Processes fn starts (e.g. `ammp-edge simulate --speedwire`) inherit the namespace, so multicast
datagrams never reach a real network and tests running at the same time never hear each other.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import subprocess
import traceback

import pytest

CLONE_NEWNET = 0x40000000


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def in_netns(fn, *args, timeout: float = 120.0):
    if not available():
        pytest.skip("a private network namespace needs root and iproute2")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        code = 0
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
            result = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            result = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            code = 1
        try:
            data = pickle.dumps(result)
        except Exception as exc:  # noqa: BLE001
            data = pickle.dumps(("error", f"result not picklable: {exc}"))
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data) if data else ("error", "the namespace child died without a result")
    if kind == "error":
        pytest.fail(f"in the network namespace: {value}", pytrace=False)
    return value
