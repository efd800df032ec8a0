#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0


DOCUMENTATION = r"""
---
module: cpu_power
short_description: Set the CPU frequency governor and disable CPU idle states by name
description:
  - Writes C(cpufreq/scaling_governor) of every online CPU, like C(cpupower frequency-set -g GOVERNOR).
  - Disables (or re-enables) CPU idle states given by their name (C(C1E), C(C6), ...), like
    C(cpupower idle-set -d INDEX). The index of a state differs between CPU models and kernels, so names are
    resolved to indices from C(cpuidle/stateN/name) on each CPU at run time.
  - Changes only what differs, so a second run reports no change. Supports check mode and diff mode.
  - The settings last until the next boot; persist them with a boot-time unit or the kernel command line.
options:
  governor:
    description:
      - Governor for every CPU. Must be one the kernel offers in C(scaling_available_governors).
      - Omit to leave the governor alone.
    type: str
  disable_idle_states:
    description:
      - Names of idle states to disable on every CPU.
      - A name the CPU does not have is reported in C(absent_idle_states) with a warning, not an error; the
        CPU never enters a state it lacks (for example after C(intel_idle.max_cstate=0)).
    type: list
    elements: str
    default: []
  enable_idle_states:
    description: Names of idle states to enable again on every CPU.
    type: list
    elements: str
    default: []
  sysfs_root:
    description: The CPU directory of sysfs. Change it only for tests.
    type: path
    default: /sys/devices/system/cpu
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
author:
  - inferfleet contributors (@inferfleet)
"""

EXAMPLES = r"""
- name: Use the performance governor and keep CPUs out of deep idle states (seed 000)
  cpu_power:
    governor: performance
    disable_idle_states: [C1E, C6]

- name: Report the current settings without changing them
  cpu_power:
    governor: performance
    disable_idle_states: [C1E, C6]
  check_mode: true
  register: cpu_now
"""

RETURN = r"""
governors:
  description: Governor now in use, mapped to the CPUs using it (after the change; the current one in check mode).
  returned: always
  type: dict
  sample: {"performance": [0, 1, 2, 3]}
available_governors:
  description: Governors the kernel offers (from the first CPU with cpufreq).
  returned: always
  type: list
  sample: [performance, powersave]
idle_states:
  description: Each idle state name with its index and the CPUs where it is disabled.
  returned: always
  type: list
  sample: [{"name": "C1E", "index": 2, "disabled_cpus": [0, 1, 2, 3], "cpus": [0, 1, 2, 3]}]
absent_idle_states:
  description: Names asked for that no CPU has.
  returned: always
  type: list
  sample: [C6]
writes:
  description: The sysfs files written (or that would be written in check mode) and their new value.
  returned: always
  type: list
  sample: [{"path": "/sys/devices/system/cpu/cpu0/cpuidle/state2/disable", "before": "0", "after": "1"}]
cpus:
  description: Number of CPUs found.
  returned: always
  type: int
cpu_vendor:
  description: The C(vendor_id) of /proc/cpuinfo (GenuineIntel, AuthenticAMD), empty where there is none (Arm).
  returned: always
  type: str
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

CPU_DIR = re.compile(r"^cpu(\d+)$")
STATE_DIR = re.compile(r"^state(\d+)$")


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def read_cpu_tree(root):
    """The CPUs under a sysfs cpu directory: [{cpu, governor, available_governors, states: [{index, name,
    disable}]}]. Pure reading, no writes; CPUs without cpufreq have governor None."""
    cpus = []
    try:
        entries = os.listdir(root)
    except OSError:
        return cpus
    for entry in entries:
        match = CPU_DIR.match(entry)
        if not match:
            continue
        base = os.path.join(root, entry)
        if _read(os.path.join(base, "online")) == "0":
            continue
        states = []
        idle_dir = os.path.join(base, "cpuidle")
        if os.path.isdir(idle_dir):
            for state in os.listdir(idle_dir):
                state_match = STATE_DIR.match(state)
                if state_match:
                    states.append({
                        "index": int(state_match.group(1)),
                        "name": _read(os.path.join(idle_dir, state, "name")),
                        "disable": _read(os.path.join(idle_dir, state, "disable")),
                    })
        available = _read(os.path.join(base, "cpufreq", "scaling_available_governors"))
        cpus.append({
            "cpu": int(match.group(1)),
            "governor": _read(os.path.join(base, "cpufreq", "scaling_governor")),
            "available_governors": available.split() if available else [],
            "states": sorted(states, key=lambda s: s["index"]),
        })
    return sorted(cpus, key=lambda c: c["cpu"])


def plan_writes(root, cpus, governor=None, disable=(), enable=()):
    """The sysfs writes that bring the CPUs to the wanted settings, as [{path, before, after}]."""
    writes = []
    disable, enable = set(disable), set(enable)
    for cpu in cpus:
        base = os.path.join(root, "cpu%d" % cpu["cpu"])
        if governor and cpu["governor"] is not None and cpu["governor"] != governor:
            writes.append({"path": os.path.join(base, "cpufreq", "scaling_governor"),
                           "before": cpu["governor"], "after": governor})
        for state in cpu["states"]:
            want = "1" if state["name"] in disable else "0" if state["name"] in enable else None
            if want is not None and state["disable"] != want:
                writes.append({"path": os.path.join(base, "cpuidle", "state%d" % state["index"], "disable"),
                               "before": state["disable"], "after": want})
    return writes


def apply_writes(cpus, writes, root):
    """The CPU tree as it is after the writes (used for check mode and for the return value)."""
    by_path = {w["path"]: w["after"] for w in writes}
    result = []
    for cpu in cpus:
        base = os.path.join(root, "cpu%d" % cpu["cpu"])
        gov_path = os.path.join(base, "cpufreq", "scaling_governor")
        states = [dict(s, disable=by_path.get(os.path.join(base, "cpuidle", "state%d" % s["index"], "disable"),
                                              s["disable"])) for s in cpu["states"]]
        result.append(dict(cpu, governor=by_path.get(gov_path, cpu["governor"]), states=states))
    return result


def summarize(cpus):
    """Governors in use and idle states with the CPUs where they are disabled."""
    governors = {}
    states = {}
    for cpu in cpus:
        if cpu["governor"] is not None:
            governors.setdefault(cpu["governor"], []).append(cpu["cpu"])
        for state in cpu["states"]:
            entry = states.setdefault(state["name"], {
                "name": state["name"], "index": state["index"], "cpus": [], "disabled_cpus": []})
            entry["cpus"].append(cpu["cpu"])
            if state["disable"] == "1":
                entry["disabled_cpus"].append(cpu["cpu"])
    return governors, sorted(states.values(), key=lambda s: s["index"])


def cpu_ranges(numbers):
    """[0, 1, 2, 5] -> '0-2,5', the notation of /sys/devices/system/cpu/online."""
    parts = []
    for number in sorted(numbers):
        if parts and parts[-1][1] == number - 1:
            parts[-1][1] = number
        else:
            parts.append([number, number])
    return ",".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in parts)


def render(cpus):
    governors, states = summarize(cpus)
    lines = ["governor %s: cpus %s" % (name, cpu_ranges(ids)) for name, ids in sorted(governors.items())]
    for state in states:
        disabled = state["disabled_cpus"]
        status = "disabled on cpus %s" % cpu_ranges(disabled) if disabled else "enabled"
        lines.append("idle state %s (state%d): %s" % (state["name"], state["index"], status))
    return "\n".join(lines) + "\n"


def cpu_vendor(cpuinfo_text):
    """vendor_id of the first processor in /proc/cpuinfo ('' on architectures without it)."""
    for line in cpuinfo_text.splitlines():
        key, value = line.partition(":")[::2]
        if key.strip() == "vendor_id":
            return value.strip()
    return ""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            governor=dict(type="str"),
            disable_idle_states=dict(type="list", elements="str", default=[]),
            enable_idle_states=dict(type="list", elements="str", default=[]),
            sysfs_root=dict(type="path", default="/sys/devices/system/cpu"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    root = params["sysfs_root"]
    both = sorted(set(params["disable_idle_states"]) & set(params["enable_idle_states"]))
    if both:
        module.fail_json(msg="idle states %s are both in disable_idle_states and enable_idle_states; "
                             "keep each name in one list" % ", ".join(both))
    cpus = read_cpu_tree(root)
    if not cpus:
        module.fail_json(msg="no CPU found under %s" % root)

    available = next((c["available_governors"] for c in cpus if c["available_governors"]), [])
    governor = params["governor"]
    warnings = []
    if governor:
        if not any(c["governor"] is not None for c in cpus):
            warnings.append("no cpufreq driver: the governor cannot be set on this host (a VM or a BIOS-managed "
                            "CPU); set the power profile in the BIOS/BMC instead")
        elif governor not in available:
            module.fail_json(msg="governor %r is not offered by this kernel (available: %s); set host_tuning_governor"
                                 " to one of them" % (governor, " ".join(available)),
                             available_governors=available)

    names = {s["name"] for c in cpus for s in c["states"]}
    wanted_names = list(params["disable_idle_states"]) + list(params["enable_idle_states"])
    absent = [name for name in wanted_names if name not in names]
    if absent:
        warnings.append("idle states %s do not exist on this CPU (it has: %s); nothing to do for them"
                        % (", ".join(absent), ", ".join(sorted(names)) or "none"))

    writes = plan_writes(root, cpus, governor, params["disable_idle_states"], params["enable_idle_states"])
    after = apply_writes(cpus, writes, root)
    if writes and not module.check_mode:
        for write in writes:
            try:
                with open(write["path"], "w", encoding="utf-8") as handle:
                    handle.write(write["after"] + "\n")
            except OSError as err:
                module.fail_json(msg="cannot write %s to %s: %s" % (write["after"], write["path"], err),
                                 writes=writes)
        after = read_cpu_tree(root)
        left = plan_writes(root, after, governor, params["disable_idle_states"], params["enable_idle_states"])
        if left:
            module.fail_json(msg="the kernel did not keep %d setting(s), e.g. %s is %s" % (
                len(left), left[0]["path"], left[0]["before"]), writes=writes)

    governors, states = summarize(after)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(
        changed=bool(writes),
        governors=governors,
        available_governors=available,
        idle_states=states,
        absent_idle_states=absent,
        writes=writes,
        cpus=len(cpus),
        cpu_vendor=cpu_vendor(_read("/proc/cpuinfo") or ""),
        diff={"before": render(cpus), "after": render(after),
              "before_header": root + " (before)", "after_header": root + " (after)"},
    )


if __name__ == "__main__":
    main()
