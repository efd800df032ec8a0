#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0


DOCUMENTATION = r"""
---
module: accel_facts
short_description: Read the accelerators of a host from its vendor tool
description:
  - Runs C(hl-smi) (Intel Gaudi), C(npu-smi info) (Huawei Ascend) or C(nvidia-smi) (NVIDIA) and returns the
    cards it lists, with index, module id, bus id, memory total and used, the processes holding each card and
    the driver version.
  - Also finds holders the way C(lsof) would, by scanning C(/proc/*/fd) for the card's device nodes, and names
    the Docker container of a holder when its cgroup shows one.
  - Read-only; never changes the host. Supports check mode.
  - On inferfleet sandbox hosts the tools are emulators and the result carries C(simulated=true).
options:
  platform:
    description:
      - Accelerator family of the host. C(cpu) returns no devices without running any tool.
    type: str
    required: true
    choices: [gaudi, ascend, nvidia, cpu]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - inferfleet contributors (@inferfleet)
"""

EXAMPLES = r"""
- name: Read the accelerator inventory
  accel_facts:
    platform: "{{ inferfleet_platform }}"

- name: Show the cards
  ansible.builtin.debug:
    msg: "{{ ansible_facts.inferfleet_accel.count }} x {{ ansible_facts.inferfleet_accel.model }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts under the key C(inferfleet_accel).
  returned: always
  type: dict
  contains:
    inferfleet_accel:
      description: The accelerator inventory.
      type: dict
      contains:
        platform: {description: Platform asked for., type: str}
        model: {description: Card model of the first card (empty when there is none)., type: str}
        count: {description: Number of cards listed., type: int}
        memory_total_mib: {description: Memory of the smallest card in MiB (0 without cards)., type: int}
        driver_version: {description: Driver version the tool reports., type: str}
        tool_version: {description: Version of the vendor tool., type: str}
        simulated: {description: True on an inferfleet sandbox host (emulated tools)., type: bool}
        devices:
          description: One entry per card.
          type: list
          elements: dict
          sample:
            - index: 0
              module_id: 2
              bus_id: "0000:33:00.0"
              name: HL-225
              memory_total_mib: 98304
              memory_used_mib: 768
              held: false
              processes: []
              numa_node: 0
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.inferfleet.fleet.plugins.module_utils.accel_parsers import (
    merge_devices,
    npu_smi_failure,
    parse_csv_query,
    parse_hl_smi,
    parse_npu_smi_info,
    parse_nvidia_smi,
)

TOOLS = {"gaudi": "hl-smi", "ascend": "npu-smi", "nvidia": "nvidia-smi"}
HOLD_NODES = {
    "gaudi": ("/dev/accel/accel{i}", "/dev/accel/accel_controlD{i}"),
    "ascend": ("/dev/davinci{i}",),
    "nvidia": ("/dev/nvidia{i}",),
}
SIMULATION_MARKER = "/etc/inferfleet-sim/profile.json"


def scan_holders(proc_root="/proc"):
    """Map /dev paths to the pids holding them open (what lsof on the device node shows)."""
    holders = {}
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return holders
    for pid in pids:
        fd_dir = os.path.join(proc_root, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("/dev/"):
                holders.setdefault(target, set()).add(int(pid))
    return holders


def container_of(pid, proc_root="/proc"):
    """Docker container id of a process, from its cgroup path (None for host processes)."""
    try:
        with open(os.path.join(proc_root, str(pid), "cgroup")) as handle:
            text = handle.read()
    except OSError:
        return None
    match = re.search(r"(?:/docker/|docker-)([0-9a-f]{64})", text)
    return match.group(1)[:12] if match else None


def numa_node(bus_id):
    bus = bus_id.lower()
    if len(bus.split(":")[0]) == 8:  # nvidia-smi prints an 8-digit PCI domain
        bus = bus[4:]
    try:
        with open("/sys/bus/pci/devices/%s/numa_node" % bus) as handle:
            value = int(handle.read().strip())
        return value if value >= 0 else None
    except (OSError, ValueError):
        return None


def run(module, argv):
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg="%s failed (rc=%d): %s" % (" ".join(argv), rc, (err or out).strip()[-500:]),
                         rc=rc, stdout=out, stderr=err)
    return out


def read_devices(module, platform):
    if platform == "gaudi":
        table = parse_hl_smi(run(module, ["hl-smi"]))
        query = parse_csv_query(run(module, ["hl-smi", "-Q", "index,module_id", "-f", "csv"]))
        module_ids = dict((row["index"], row["module_id"]) for row in query)
        devices = merge_devices(table["devices"], table["processes"], module_ids)
        return devices, table["driver_version"], table["tool_version"]
    if platform == "ascend":
        output = run(module, ["npu-smi", "info"])
        failure = npu_smi_failure(output)
        if failure:
            module.fail_json(msg="%s. Fix: check which process or container holds /dev/davinci* (lsof), that "
                                 "the driver is loaded (npu-smi info on the host as root), and the device and "
                                 "driver mounts of a container" % failure, stdout=output)
        info = parse_npu_smi_info(output)
        return merge_devices(info["devices"], info["processes"]), info["driver_version"], info["tool_version"]
    table = parse_nvidia_smi(run(module, ["nvidia-smi"]))
    return merge_devices(table["devices"], table["processes"]), table["driver_version"], table["cuda_version"]


def main():
    module = AnsibleModule(
        argument_spec=dict(platform=dict(type="str", required=True, choices=["gaudi", "ascend", "nvidia", "cpu"])),
        supports_check_mode=True,
    )
    platform = module.params["platform"]
    facts = dict(platform=platform, model="", count=0, memory_total_mib=0, driver_version="", tool_version="",
                 simulated=os.path.exists(SIMULATION_MARKER), devices=[])
    if platform != "cpu":
        tool = module.get_bin_path(TOOLS[platform])
        if tool is None:
            module.fail_json(msg="%s not found on the host: install the %s driver and tools, or fix "
                                 "inferfleet_platform" % (TOOLS[platform], platform))
        devices, driver, tool_version = read_devices(module, platform)
        holders = scan_holders()
        for device in devices:
            pids = set()
            for pattern in HOLD_NODES[platform]:
                pids |= holders.get(pattern.format(i=device["index"]), set())
            known = set(p["pid"] for p in device["processes"])
            for pid in sorted(pids - known):
                device["processes"].append({"pid": pid, "name": None, "memory_mib": None})
            for proc in device["processes"]:
                proc["container"] = container_of(proc["pid"])
            device["held"] = bool(device["processes"])
            device["numa_node"] = numa_node(device["bus_id"])
        facts.update(devices=devices, count=len(devices), driver_version=driver or "", tool_version=tool_version or "",
                     model=devices[0]["name"] if devices else "",
                     memory_total_mib=min(d.get("memory_total_mib", 0) for d in devices) if devices else 0)
    module.exit_json(changed=False, ansible_facts=dict(inferfleet_accel=facts))


if __name__ == "__main__":
    main()
