"""How the bus program's readers find a TCP device known only by its MAC: ARP and the scan cache
(core.macs), and when both miss, a rate-limited background sweep (node.scan.macs, which runs nmap).
Wired here, above every layer, so the readers never import the scan code."""

from __future__ import annotations

from ..core.macs import lookup


def resolve_mac(mac: str) -> str | None:
    ip = lookup(mac)
    if ip is None:
        from ..node.scan import macs  # nmap and the scan code only for a MAC that is not known yet

        macs.sweep_if_due(mac)
    return ip
