# Copyright: inferfleet contributors
# Apache License 2.0
"""Pure parsers of the link tools the fabric stage runs on a host: `hl-smi -n link` (Intel Gaudi), `hccn_tool`
(Huawei Ascend) and `nvidia-smi topo -m` (NVIDIA). Each format is a recorded real output; the samples and their
sources are in tests/fixtures/fabric/ (NOTES-gaudi.md, NOTES-ascend-nvidia.md).
"""

import re

_PORT = re.compile(r"^port\s+(\d+):\s*(\S+)\s*$")


def parse_hl_smi_link(text):
    """`hl-smi -n link -i <bus id>`: one line per port, `port <n>:<TAB>UP|DOWN` (hl-smi 1.23.0)."""
    ports = []
    for line in (text or "").splitlines():
        match = _PORT.match(line.strip())
        if match:
            ports.append({"port": int(match.group(1)), "state": match.group(2).upper()})
    return ports


def parse_hccn_fields(text):
    """`hccn_tool -i N -link -g` (`link status: UP`), `-net_health -g` (`net health status: Success`), `-ip -g`
    (`ipaddr:11.12.165.80` / `netmask:255.255.255.0`, no space after the colon): key -> value."""
    fields = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    return fields


_PING_HEAD = re.compile(r"^device (\d+) PING (\S+)")
_PING_SUMMARY = re.compile(r"^(\d+) packets? transmitted, (\d+) received, ([0-9.]+)% packets? loss")


def parse_hccn_ping(text):
    """`hccn_tool -i N -ping -g address IP`: `device N PING IP`, `recv seq=K,time=Xms` per reply, `recv time out
    seq=K` per lost packet, then `T packets transmitted, R received, P% packet loss`."""
    result = {"device": None, "address": None, "transmitted": None, "received": None, "loss_pct": None,
              "timeouts": 0, "errors": []}
    for line in (text or "").splitlines():
        line = line.strip()
        head = _PING_HEAD.match(line)
        if head:
            result["device"], result["address"] = int(head.group(1)), head.group(2)
            continue
        summary = _PING_SUMMARY.match(line)
        if summary:
            result["transmitted"], result["received"] = int(summary.group(1)), int(summary.group(2))
            result["loss_pct"] = float(summary.group(3))
        elif line.startswith("recv time out"):
            result["timeouts"] += 1
        elif "Unreachable" in line or "Message too long" in line:
            result["errors"].append(line)
    return result


def _topo_cells(line):
    """A matrix line's cells: tab-separated as printed; published copies with the tabs expanded split on runs of
    spaces (the diagonal ` X ` is then `X`)."""
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # nvidia-smi 580 colours the header
    if "\t" in line:
        return [cell.strip() for cell in line.split("\t")]
    return line.split()


def parse_nvidia_topo(text):
    """`nvidia-smi topo -m`: the matrix before `Legend:` -> {"gpus": [...], "nics": [...], "links": {GPUi:
    {GPUj: NV18|PIX|PXB|PHB|NODE|SYS}}, "cpu_affinity": {GPUi: text}}. The columns after the device columns
    (CPU Affinity, NUMA Affinity, GPU NUMA ID) are not aligned with their header on every driver: only the first
    one, CPU Affinity, is read."""
    result = {"gpus": [], "nics": [], "links": {}, "cpu_affinity": {}}
    devices = []
    for line in (text or "").splitlines():
        if line.startswith("Legend"):
            break
        cells = _topo_cells(line)
        if not devices:
            named = [c for c in cells if c]
            devices = [c for c in named if re.match(r"^(GPU\d+|NIC\d+|mlx5_\d+)$", c)]
            result["gpus"] = [d for d in devices if d.startswith("GPU")]
            result["nics"] = [d for d in devices if not d.startswith("GPU")]
            continue
        if not cells or not re.match(r"^GPU\d+$", cells[0]):
            continue
        values = cells[1:]
        result["links"][cells[0]] = {device: values[i] for i, device in enumerate(devices)
                                     if device.startswith("GPU") and i < len(values)}
        if len(values) > len(devices):
            result["cpu_affinity"][cells[0]] = values[len(devices)]
    return result
