#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0


DOCUMENTATION = r"""
---
module: fabric_links
short_description: Check the links between a host's accelerator cards
description:
  - Intel Gaudi - runs C(hl-smi -n link -i <bus id>) for every card and reports each port's state; a port
    that is not UP is a problem, except the card model's external (scale-out) ports when the test stays on
    the host.
  - Huawei Ascend - runs C(hccn_tool -i N -link -g), C(-net_health -g) and C(-ip -g) for every card (link
    must be UP, net health Success) and, with I(ping), pings the next card's address from each card
    (C(hccn_tool -i N -ping -g address IP)); a lost packet is a problem.
  - NVIDIA - records C(nvidia-smi topo -m) (the link kind between every pair of GPUs); nothing is judged.
  - Never fails on what it finds - it returns C(problems) (empty when every link is up) and the caller
    decides. Read-only; supports check mode.
  - Parsers are in module_utils/fabric_parsers.py, tested on recorded real outputs.
options:
  platform:
    description: Accelerator family of the host.
    type: str
    required: true
    choices: [gaudi, ascend, nvidia]
  cards:
    description: The cards to check, each with its C(index) and, for Gaudi, C(bus_id) (from accel_facts).
    type: list
    elements: dict
    required: true
  external_ports:
    description: Gaudi ports that leave the host (scale-out); not required UP unless I(require_external).
    type: list
    elements: int
    default: []
  require_external:
    description: The test crosses hosts, so the external ports must be UP too.
    type: bool
    default: false
  ping:
    description: Ascend - ping the next card's address from each card.
    type: bool
    default: true
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
- name: Check the links of every card
  fabric_links:
    platform: gaudi
    cards: "{{ ansible_facts.inferfleet_accel.devices }}"
    external_ports: [8, 22, 23]
  register: links

- name: Stop on a link down
  ansible.builtin.fail:
    msg: "{{ links.problems }}"
  when: links.problems | length > 0
"""

RETURN = r"""
cards:
  description: What each card's tools reported.
  returned: always
  type: list
  elements: dict
  sample:
    - index: 0
      bus_id: "0000:33:00.0"
      ports: [{port: 0, state: UP}]
      link: UP
      net_health: Success
      ipaddr: 192.168.100.101
      ping: {address: 192.168.100.102, transmitted: 3, received: 3, loss_pct: 0.0}
problems:
  description: One line per link that is not as it must be, naming card, bus id and port.
  returned: always
  type: list
  elements: str
topology:
  description: NVIDIA - the parsed C(nvidia-smi topo -m) (gpus, nics, links, cpu_affinity) and its text.
  returned: when platform is nvidia
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.inferfleet.fleet.plugins.module_utils.fabric_parsers import (
    parse_hccn_fields,
    parse_hccn_ping,
    parse_hl_smi_link,
    parse_nvidia_topo,
)

HCCN_DIRS = ["/usr/local/Ascend/driver/tools"]


def _run(module, argv):
    rc, out, err = module.run_command(argv)
    return rc, out, err.strip()


def gaudi(module, tool, cards, external, require_external):
    problems = []
    for card in cards:
        rc, out, err = _run(module, [tool, "-n", "link", "-i", card["bus_id"]])
        card["ports"] = parse_hl_smi_link(out)
        if rc != 0 or not card["ports"]:
            problems.append("card %s (%s): hl-smi -n link failed (exit %s): %s"
                            % (card["index"], card["bus_id"], rc, err or out.strip() or "no port listed"))
            continue
        for port in card["ports"]:
            if port["state"] != "UP" and (require_external or port["port"] not in external):
                problems.append("card %s (%s) port %s is %s"
                                % (card["index"], card["bus_id"], port["port"], port["state"]))
    return problems


def ascend(module, tool, cards, ping):
    problems = []
    for card in cards:
        index = str(card["index"])
        for option, key, wanted, field in (("-link", "link status", "UP", "link"),
                                           ("-net_health", "net health status", "Success", "net_health")):
            rc, out, err = _run(module, [tool, "-i", index, option, "-g"])
            value = parse_hccn_fields(out).get(key)
            card[field] = value
            if rc != 0 or value is None:
                problems.append("card %s: hccn_tool %s -g failed (exit %s): %s" % (index, option, rc,
                                                                                   err or out.strip()))
            elif value != wanted:
                problems.append("card %s: %s is %s (wanted %s)" % (index, key, value, wanted))
        rc, out, err = _run(module, [tool, "-i", index, "-ip", "-g"])
        card["ipaddr"] = parse_hccn_fields(out).get("ipaddr")
        if not card["ipaddr"]:
            problems.append("card %s: has no address (hccn_tool -i %s -ip -g printed none; /etc/hccn.conf "
                            "sets address_%s)" % (index, index, index))
    if ping and len(cards) > 1:
        for position, card in enumerate(cards):
            peer = cards[(position + 1) % len(cards)]
            if not card.get("ipaddr") or not peer.get("ipaddr"):
                continue
            rc, out, err = _run(module, [tool, "-i", str(card["index"]), "-ping", "-g", "address", peer["ipaddr"]])
            result = parse_hccn_ping(out)
            card["ping"] = dict(result, address=peer["ipaddr"])
            if rc != 0 or result["received"] is None or result["received"] < result["transmitted"]:
                problems.append("card %s: ping of card %s (%s) lost %s of %s packet(s)%s"
                                % (card["index"], peer["index"], peer["ipaddr"],
                                   "?" if result["transmitted"] is None else result["transmitted"] - result["received"],
                                   "?" if result["transmitted"] is None else result["transmitted"],
                                   ": " + "; ".join(result["errors"] or [err]) if result["errors"] or err else ""))
    return problems


def main():
    module = AnsibleModule(
        argument_spec=dict(
            platform=dict(type="str", required=True, choices=["gaudi", "ascend", "nvidia"]),
            cards=dict(type="list", elements="dict", required=True),
            external_ports=dict(type="list", elements="int", default=[]),
            require_external=dict(type="bool", default=False),
            ping=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    platform = module.params["platform"]
    cards = [{"index": int(c["index"]), "bus_id": c.get("bus_id") or ""}
             for c in sorted(module.params["cards"], key=lambda c: int(c["index"]))]
    name = {"gaudi": "hl-smi", "ascend": "hccn_tool", "nvidia": "nvidia-smi"}[platform]
    tool = module.get_bin_path(name, opt_dirs=HCCN_DIRS if platform == "ascend" else [])
    result = dict(changed=False, cards=cards, problems=[], simulated=os.path.exists("/etc/inferfleet-sim/profile.json"))
    if tool is None:
        result["problems"] = ["%s is not installed (not on PATH%s): the link check needs the driver's tools"
                              % (name, " nor in " + HCCN_DIRS[0] if platform == "ascend" else "")]
        module.exit_json(**result)
    if platform == "gaudi":
        result["problems"] = gaudi(module, tool, cards, set(module.params["external_ports"]),
                                   module.params["require_external"])
    elif platform == "ascend":
        result["problems"] = ascend(module, tool, cards, module.params["ping"])
    else:
        rc, out, err = _run(module, [tool, "topo", "-m"])
        if rc != 0:
            result["problems"] = ["nvidia-smi topo -m failed (exit %s): %s" % (rc, err or out.strip())]
        result["topology"] = dict(parse_nvidia_topo(out), text=out)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
