"""Pure parsers for vendor accelerator tools: hl-smi (Intel Gaudi), npu-smi (Huawei Ascend), nvidia-smi.

Each parser takes the text a tool printed and returns plain data; tests/fixtures holds recorded real outputs
with their sources, and tests/unit/test_accel_parsers.py runs every parser on them.
"""


import re

_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(MiB|MB|GiB|%|C|W)?\s*$", re.IGNORECASE)


def _number(text):
    """'98304 MiB' -> 98304, '0.5' -> 0.5, 'N/A' -> None."""
    match = _UNIT.match(text or "")
    if not match:
        return None
    value = float(match.group(1))
    return int(value) if value.is_integer() else value


def parse_csv_query(text, fields=None):
    """Rows of `hl-smi -Q ... -f csv` or `nvidia-smi --query-gpu=... --format=csv`.

    Keys are the queried field names with any unit suffix (' [MiB]') removed. With `noheader` output, pass
    the queried `fields`. Values that carry a unit ('768 MiB') become numbers; others stay strings.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return []
    if fields is None:
        fields = [re.sub(r"\s*\[.*\]$", "", f.strip()) for f in lines[0].split(",")]
        lines = lines[1:]
    rows = []
    for line in lines:
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            raise ValueError("row has %d values for %d fields: %r" % (len(values), len(fields), line))
        row = {}
        for field, value in zip(fields, values):
            number = _number(value)
            if field in ("index", "module_id", "pid") and number is not None:
                row[field] = int(number)
            elif number is not None and (field.startswith("memory.") or re.search(r"(MiB|MB|%| C| W)$", value)):
                row[field] = number
            else:
                row[field] = value
        rows.append(row)
    return rows


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _version_after(text, label):
    match = re.search(re.escape(label) + r"\s*:?\s*(\S+)", text)
    return match.group(1) if match else None


def _table_rows(text, process_marker):
    """Yield (in_process_section, cells) for each content row of an smi-style box table."""
    in_procs = False
    for line in text.splitlines():
        if process_marker in line:
            in_procs = True
            continue
        if not line.startswith("|") or set(line) <= set("|=-+ "):
            continue
        cells = _cells(line)
        if in_procs or len(cells) >= 3:
            yield in_procs, cells


def parse_hl_smi(text):
    """The default `hl-smi` table: versions, cards with bus id and memory, compute processes."""
    result = {"tool_version": _version_after(text, "HL-SMI Version:"),
              "driver_version": _version_after(text, "Driver Version:"),
              "devices": [], "processes": []}
    pending = None
    for in_procs, cells in _table_rows(text, "Compute Processes:"):
        if in_procs:
            parts = cells[0].split()
            if len(parts) >= 4 and parts[0].isdigit() and parts[1].isdigit():
                result["processes"].append({
                    "index": int(parts[0]), "pid": int(parts[1]), "type": parts[2],
                    "name": " ".join(parts[3:-1]) if len(parts) > 4 else parts[3],
                    "memory_mib": _number(parts[-1].replace("MiB", " MiB")) if len(parts) > 4 else None})
            continue
        first = cells[0].split()
        if first and first[0].isdigit() and re.match(r"^[0-9a-fA-F]{4}:", cells[1]):
            pending = {"index": int(first[0]), "name": first[1] if len(first) > 1 else "",
                       "bus_id": cells[1].split()[0]}
            continue
        memory = re.search(r"(\d+)\s*Mi?B\s*/\s*(\d+)\s*Mi?B", cells[1], re.IGNORECASE)
        if pending is not None and memory:
            pending["memory_used_mib"] = int(memory.group(1))
            pending["memory_total_mib"] = int(memory.group(2))
            result["devices"].append(pending)
            pending = None
    return result


DCMI_FAILURE = re.compile(r"dcmi module initialize failed\. ret is (-?\d+)")
# DCMI return codes (Huawei's driver source, dcmi_interface_api.h; DCMI API reference, "return codes")
DCMI_CODES = {
    -8005: "an internal error of the driver interface (DCMI_ERR_CODE_INNER_ERR); in practice the cards are held "
           "by another container, or this one cannot use the device nodes (their owner, a dropped capability "
           "such as CAP_DAC_OVERRIDE) or lacks part of the driver mounts",
    -8020: "the device is used by another process (DCMI_ERR_CODE_RESOURCE_OCCUPIED)",
}


def npu_smi_failure(text):
    """What a failed `npu-smi info` means, or None. npu-smi prints the DCMI failure and exits 0, so the text is
    the only sign."""
    match = DCMI_FAILURE.search(text or "")
    if not match:
        return None
    code = int(match.group(1))
    return "npu-smi could not reach the driver (dcmi ret %d): %s" % (
        code, DCMI_CODES.get(code, "see the DCMI return codes of the driver's documentation"))


def parse_npu_smi_info(text):
    """`npu-smi info`: versions, NPUs (one row pair per chip) with bus id and HBM use, processes per NPU."""
    result = {"tool_version": None, "driver_version": None, "devices": [], "processes": []}
    version = re.search(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)", text)
    if version:
        result["tool_version"], result["driver_version"] = version.group(1), version.group(2)
    in_procs = False
    pending = None
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|=-+ "):
            continue
        cells = _cells(line)
        if cells and cells[0].startswith("NPU") and len(cells) > 1 and cells[1].startswith("Process id"):
            in_procs = True
            continue
        if in_procs:
            if len(cells) >= 4 and cells[1].isdigit():
                npu_chip = cells[0].split()
                result["processes"].append({
                    "index": int(npu_chip[0]), "chip": int(npu_chip[1]) if len(npu_chip) > 1 else 0,
                    "pid": int(cells[1]), "name": cells[2], "memory_mib": _number(cells[3])})
            continue
        if len(cells) < 3:
            continue
        first = cells[0].split()
        health = ("OK", "Warning", "Alarm", "Critical", "Abnormal", "Unknown")
        if len(first) >= 2 and first[0].isdigit() and cells[1] in health:
            pending = {"index": int(first[0]), "name": first[1], "health": cells[1]}
            continue
        if pending is not None and re.match(r"^[0-9a-fA-Fx]{4}:", cells[1]):
            chip = first
            hbm = re.findall(r"(\d+)\s*/\s*(\d+)", cells[2])
            device = dict(pending, chip=int(chip[0]) if chip else 0,
                          phy_id=int(chip[1]) if len(chip) > 1 else None, bus_id=cells[1])
            if hbm:
                device["memory_used_mib"], device["memory_total_mib"] = int(hbm[-1][0]), int(hbm[-1][1])
            result["devices"].append(device)
            pending = dict(pending)  # a second chip of the same NPU (A3 / 910C) repeats the NPU row pattern
    return result


def parse_nvidia_smi(text):
    """The default `nvidia-smi` table: versions, GPUs with bus id and memory, processes."""
    result = {"driver_version": _version_after(text, "Driver Version:"),
              "cuda_version": _version_after(text, "CUDA Version:"), "devices": [], "processes": []}
    pending = None
    for in_procs, cells in _table_rows(text, "Processes:"):
        if in_procs:
            parts = cells[0].split()
            if len(parts) >= 6 and parts[0].isdigit() and parts[3].isdigit():
                result["processes"].append({"index": int(parts[0]), "pid": int(parts[3]), "type": parts[4],
                                            "name": " ".join(parts[5:-1]),
                                            "memory_mib": _number(parts[-1].replace("MiB", " MiB"))})
            continue
        first = cells[0].split()
        if first and first[0].isdigit() and re.match(r"^[0-9A-Fa-f]{8}:", cells[1]):
            name = " ".join(first[1:-1]) if first[-1] in ("On", "Off") else " ".join(first[1:])
            pending = {"index": int(first[0]), "name": name, "bus_id": cells[1].split()[0]}
            continue
        memory = re.search(r"(\d+)\s*MiB\s*/\s*(\d+)\s*MiB", cells[1])
        if pending is not None and memory:
            pending["memory_used_mib"], pending["memory_total_mib"] = int(memory.group(1)), int(memory.group(2))
            result["devices"].append(pending)
            pending = None
    return result


def merge_devices(devices, processes, module_ids=None):
    """Attach each card's processes and held flag; module ids from a query where the table lacks them."""
    merged = []
    for device in devices:
        entry = dict(device)
        entry["processes"] = [p for p in processes if p.get("index") == device["index"]]
        entry["held"] = bool(entry["processes"])
        if module_ids is not None:
            entry["module_id"] = module_ids.get(device["index"], device.get("module_id"))
        entry.setdefault("module_id", device["index"])
        merged.append(entry)
    return merged
