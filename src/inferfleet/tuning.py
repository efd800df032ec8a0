"""The verification table of the tune stage: for each setting, what was wanted, what runs now and what persists.

Pure functions over the results of the host_tuning role's read-only checks, used by the filter plugin
plugins/filter/tuning.py, so the table's logic is unit-tested without a host.
"""

from __future__ import annotations

import re

from inferfleet.text import align

OK, PENDING_REBOOT, SHORT, MISMATCH = "ok", "pending reboot", "short", "MISMATCH"
IDLE_STATE_NAME = re.compile(r"^(POLL|C\d+[A-Z]*(-[A-Z]+)?(_ACPI)?|WFI|cpu-sleep-\d+|cluster-sleep-\d+)$")
GOVERNORS = ("performance", "powersave", "ondemand", "conservative", "schedutil", "userspace")


def parse_sysctl_conf(text: str) -> dict[str, str]:
    """key -> value from a sysctl.d file (the last assignment wins, as systemd-sysctl applies them)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip().lstrip("-").replace("/", ".")] = value.strip()
    return values


SYSCTL_KEYS = (("vm.nr_hugepages", "hugepages"), ("kernel.numa_balancing", "numa_balancing"))


def sysctl_drift(wanted: dict, sysctl_now: dict, sysctl_file: str) -> dict[str, list[str]]:
    """What the tune stage still has to do for each kernel setting it manages: key -> a list of "now" (the running
    value differs from the wanted one) and "persisted" (our sysctl.d file does not set it). A setting with nothing to
    do is left out, so that a converged host runs none of the sysctl tasks.

    wanted, sysctl_now, sysctl_file: as for tuning_rows.
    """
    persisted = parse_sysctl_conf(sysctl_file)
    drift = {}
    for key, field in SYSCTL_KEYS:
        value = wanted.get(field)
        if value is None:
            continue
        value = str(int(value))
        todo = [part for part, seen in (("now", str(sysctl_now.get(key, "?")).strip()),
                                        ("persisted", persisted.get(key))) if seen != value]
        if todo:
            drift[key] = todo
    return drift


def _row(setting, wanted, now, persisted, status):
    return {"setting": setting, "wanted": str(wanted), "now": str(now), "persisted": persisted, "status": status}


def tuning_rows(wanted: dict, cpu: dict, cmdline: dict | None, sysctl_now: dict, sysctl_file: str,
                boot_unit: bool) -> list[dict]:
    """Rows of the verification table.

    wanted: {governor, disable_idle_states, hugepages, numa_balancing, cmdline_args: {key: value}}
    cpu: the cpu_power module's result read in check mode (governors, idle_states, absent_idle_states)
    cmdline: the kernel_cmdline module's result read in check mode, or None when the host has no GRUB file
    sysctl_now: {key: value} read from /proc/sys; sysctl_file: the text of our sysctl.d file ("" if absent)
    """
    rows = []
    persisted_sysctl = parse_sysctl_conf(sysctl_file)
    grub_args = set((cmdline or {}).get("cmdline", "").split())
    running_args = set((cmdline or {}).get("running", "").split())
    unit = "boot unit" if boot_unit else ""

    governor = wanted.get("governor")
    if governor:
        now = sorted(cpu.get("governors", {}))
        on_cmdline = f"cpufreq.default_governor={governor}" in grub_args
        persisted = ", ".join(p for p in (unit, "cmdline" if on_cmdline else "") if p) or "no"
        status = OK if now == [governor] else MISMATCH
        if not now:
            now, status = ["n/a (no cpufreq driver)"], OK
        rows.append(_row("cpu governor", governor, ",".join(now), persisted, status))

    states = {s["name"]: s for s in cpu.get("idle_states", [])}
    for name in wanted.get("disable_idle_states", []):
        state = states.get(name)
        if state is None:
            rows.append(_row(f"idle state {name}", "disabled", "absent on this CPU", unit or "no", OK))
            continue
        disabled, total = len(state["disabled_cpus"]), len(state["cpus"])
        rows.append(_row(f"idle state {name} (state{state['index']})", "disabled",
                         f"disabled on {disabled}/{total} cpus", unit or "no",
                         OK if disabled == total else MISMATCH))

    for key, field in SYSCTL_KEYS:
        value = wanted.get(field)
        if value is None:
            continue
        value = str(int(value))
        now = str(sysctl_now.get(key, "?")).strip()
        persisted = "sysctl.d" if persisted_sysctl.get(key) == value else "no"
        if now == value:
            status = OK
        elif key == "vm.nr_hugepages" and now.isdigit() and int(now) < int(value):
            status = SHORT
        else:
            status = MISMATCH
        rows.append(_row(key, value, now, persisted, status))

    for key, value in wanted.get("cmdline_args", {}).items():
        arg = key if value is None else f"{key}={value}"
        if cmdline is None:
            rows.append(_row(f"cmdline {key}", arg, "yes" if arg in running_args else "no", "no (no GRUB file)",
                             OK if arg in running_args else MISMATCH))
            continue
        in_grub = arg in grub_args
        running = arg in running_args
        status = OK if running and in_grub else PENDING_REBOOT if in_grub else MISMATCH
        rows.append(_row(f"cmdline {key}", arg, "yes" if running else "no",
                         "grub" if in_grub else "no", status))
    return rows


COLUMNS = ("setting", "wanted", "now", "persisted", "status")


def render_rows(rows: list[dict]) -> list[str]:
    """Rows as aligned text lines, with a header."""
    return align([COLUMNS] + [tuple(row[c] for c in COLUMNS) for row in rows])
