"""Turn two samples of libvirt's bulk domain statistics into what a user reads."""
from __future__ import annotations

from typing import Any

KIB_PER_MIB = 1024


def _mib(kib: Any) -> int | None:
    return int(kib) // KIB_PER_MIB if isinstance(kib, int) else None


def _indexed(sample: dict[str, Any], prefix: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    """block.0.name, block.0.rd.bytes, ... -> [{"name": ..., "read_bytes": ...}, ...]."""
    items = []
    for index in range(int(sample.get(f"{prefix}.count", 0))):
        key = f"{prefix}.{index}"
        item: dict[str, Any] = {"name": str(sample.get(f"{key}.name", index))}
        for ours, theirs in fields.items():
            item[ours] = int(sample.get(f"{key}.{theirs}", 0))
        items.append(item)
    return items


def summarize(first: dict[str, Any], second: dict[str, Any], window_s: float,
              vcpus: int) -> dict[str, Any]:
    """CPU % is busy time over the window as a share of the VM's vCPUs (0-100)."""
    cpu_ns = int(second.get("cpu.time", 0))
    busy_ns = max(0, cpu_ns - int(first.get("cpu.time", 0)))
    percent = 100.0 * busy_ns / (window_s * 1e9 * max(vcpus, 1)) if window_s > 0 else 0.0
    return {
        "window_s": round(window_s, 3),
        "cpu": {"time_ns": cpu_ns, "percent": round(min(percent, 100.0), 2), "vcpus": vcpus},
        "memory": {"current_mib": _mib(second.get("balloon.current")),
                   "available_mib": _mib(second.get("balloon.available")),
                   "unused_mib": _mib(second.get("balloon.unused")),
                   "rss_mib": _mib(second.get("balloon.rss"))},
        "disks": _indexed(second, "block", {"read_bytes": "rd.bytes", "write_bytes": "wr.bytes",
                                            "read_ops": "rd.reqs", "write_ops": "wr.reqs"}),
        "nics": _indexed(second, "net", {"rx_bytes": "rx.bytes", "tx_bytes": "tx.bytes",
                                         "rx_packets": "rx.pkts", "tx_packets": "tx.pkts"}),
    }
