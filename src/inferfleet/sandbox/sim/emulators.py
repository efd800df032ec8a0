"""Emulators of vendor CLIs for SIMULATED sandbox hosts: hl-smi (cards, -n link), npu-smi, nvidia-smi (cards,
topo -m), hccn_tool (-link, -net_health, -ip, -ping).

They print the layouts recorded from real machines (tests/fixtures/README.md names each source) so that the
parsers in module_utils meet real formats. Renderers are pure functions of the card states; `main` reads the
host's profile, faults and /proc and dispatches on the program name.
"""

from __future__ import annotations

import sys

try:
    from . import simlib
except ImportError:  # run as a plain script inside a sandbox host
    import simlib  # type: ignore[no-redef]

SIM_NOTE = "inferfleet sandbox: SIMULATED device, not real hardware"


def _row(*cells: tuple[str, int]) -> str:
    """A table row: each cell padded or cut to its width, separated by '|'."""
    return "|" + "|".join(text[:width].ljust(width) for text, width in cells) + "|"


# --- hl-smi (Intel Gaudi) ---------------------------------------------------------------------------------
HL_RULE = "+" + "-" * 77 + "+"
HL_MID = "|" + "-" * 31 + "+" + "-" * 22 + "+" + "-" * 22 + "+"
HL_HEAD = (
    "| AIP  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncor-Events|",
    "| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | AIP-Util  Compute M. |",
    "|===============================+======================+======================|",
)
HL_PROC_HEAD = (
    "| Compute Processes:                                               AIP Memory |",
    "|  AIP       PID   Type   Process name                             Usage      |",
    "|=============================================================================|",
)
HL_END = "+" + "=" * 77 + "+"


def render_hl_smi(profile: dict, cards: list[dict]) -> str:
    lines = [
        HL_RULE,
        _row((f" HL-SMI Version:{profile['tool_version']:>51}          ", 77)),
        _row((f" Driver Version:{profile['driver_version']:>51}          ", 77)),
        _row((f" Nic Driver Version:{profile['driver_version']:>47}          ", 77)),
        HL_MID,
        *HL_HEAD,
    ]
    for card in cards:
        used = card["used_mib"]
        util = 88 if card["processes"] else 0
        lines.append(_row((f"   {card['index']}  {profile['model']:<20}N/A  ", 31),
                          (f" {card['bus_id']}     N/A ", 22), (f"{0:>20}  ", 22)))
        lines.append(_row((f" N/A   30C   P0  {'525W' if util else '85W':>4} /  600W  ", 31),
                          (f" {used:>5}MiB /  {card['memory_mib']}MiB ", 22),
                          (f"{util:>6}%{round(100 * used / card['memory_mib']):>13}% ", 22)))
        lines.append(HL_MID)
    lines.extend(HL_PROC_HEAD)
    for card in cards:
        if not card["processes"]:
            lines.append(_row((f"   {card['index']}        N/A   N/A    N/A{'N/A':>41}        ", 77)))
        for pid, name in card["processes"]:
            usage = f"{card['proc_mib']}MiB"
            lines.append(_row((f"   {card['index']:<6}{pid:>6}   {'C':<7}{name:<41}{usage:<11}", 77)))
    lines.append(HL_END)
    return "\n".join(lines) + "\n"


HL_QUERY_FIELDS = {
    "index": ("index", lambda p, c: str(c["index"])),
    "module_id": ("module_id", lambda p, c: str(c["module_id"])),
    "bus_id": ("bus_id", lambda p, c: c["bus_id"]),
    "name": ("name", lambda p, c: p["model"]),
    "driver_version": ("driver_version", lambda p, c: p["driver_version"]),
    "memory.total": ("memory.total [MiB]", lambda p, c: f"{c['memory_mib']} MiB"),
    "memory.used": ("memory.used [MiB]", lambda p, c: f"{c['used_mib']} MiB"),
    "memory.free": ("memory.free [MiB]", lambda p, c: f"{c['memory_mib'] - c['used_mib']} MiB"),
    "temperature.aip": ("temperature.aip [C]", lambda p, c: "30 C"),
    "utilization.aip": ("utilization.aip [%]", lambda p, c: f"{88 if c['processes'] else 0} %"),
}

NV_QUERY_FIELDS = {
    "index": ("index", lambda p, c: str(c["index"])),
    "name": ("name", lambda p, c: p["model"]),
    "uuid": ("uuid", lambda p, c: f"GPU-5e1a{c['index']:04x}-0000-4000-8000-inferfleetsim"),
    "pci.bus_id": ("pci.bus_id", lambda p, c: c["bus_id"]),
    "driver_version": ("driver_version", lambda p, c: p["driver_version"]),
    "memory.total": ("memory.total [MiB]", lambda p, c: f"{c['memory_mib']} MiB"),
    "memory.used": ("memory.used [MiB]", lambda p, c: f"{c['used_mib']} MiB"),
    "memory.free": ("memory.free [MiB]", lambda p, c: f"{c['memory_mib'] - c['used_mib']} MiB"),
    "utilization.gpu": ("utilization.gpu [%]", lambda p, c: f"{88 if c['processes'] else 0} %"),
}


def render_csv_query(profile: dict, cards: list[dict], fields: list[str], options: set[str],
                     table: dict) -> str:
    unknown = [f for f in fields if f not in table]
    if unknown:
        raise ValueError(f'Field "{unknown[0]}" is not a valid field to query.')
    lines = []
    if "noheader" not in options:
        lines.append(", ".join(table[f][0] for f in fields))
    for card in cards:
        values = [table[f][1](profile, card) for f in fields]
        if "nounits" in options:
            values = [v.rsplit(" ", 1)[0] if v.endswith((" MiB", " %", " C")) else v for v in values]
        lines.append(", ".join(values))
    return "\n".join(lines) + "\n"


# --- npu-smi (Huawei Ascend) ------------------------------------------------------------------------------
NPU_RULE = "+" + "-" * 27 + "+" + "-" * 15 + "+" + "-" * 52 + "+"
NPU_WIDE = "+" + "-" * 96 + "+"
NPU_EQ = "+" + "=" * 27 + "+" + "=" * 15 + "+" + "=" * 52 + "+"


def render_npu_smi_info(profile: dict, cards: list[dict]) -> str:
    version = profile["tool_version"]
    lines = [
        NPU_WIDE,
        _row((f" npu-smi {version:<25}Version: {version}", 96)),
        NPU_RULE,
        "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|",
        "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |",
        NPU_EQ,
    ]
    for card in cards:
        busy = bool(card["processes"])
        lines.append(_row((f" {card['index']:<6}{profile['model']:<20}", 27), (" OK", 15),
                          (f" {'178.5' if busy else '91.3':<12}{33:<18}{0:<5}/ 0", 52)))
        hbm = f"{card['used_mib']:<5}/ {card['memory_mib']}"
        lines.append(_row((f" {0:<26}", 27), (f" {card['bus_id']}", 15),
                          (f" {37 if busy else 0:<12}{0:<5}/ 0{'':<10}{hbm}", 52)))
        lines.append(NPU_EQ)
    lines.append(NPU_RULE)
    lines.append("| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |")
    lines.append(NPU_EQ)
    for card in cards:
        if not card["processes"]:
            lines.append(_row((f" No running processes found in NPU {card['index']}", 96)))
        for pid, name in card["processes"]:
            lines.append(_row((f" {card['index']:<8}{0:<18}", 27), (f" {pid:<14}", 15),
                              (f" {name:<25}| {card['proc_mib']:<24}", 52)))
        lines.append(NPU_EQ)
    return "\n".join(lines) + "\n"


# --- nvidia-smi (NVIDIA) ----------------------------------------------------------------------------------
NV_RULE = "+" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+"


def render_nvidia_smi(profile: dict, cards: list[dict]) -> str:
    lines = [
        "+" + "-" * 89 + "+",
        _row((f" NVIDIA-SMI {profile['driver_version']:<23}Driver Version: {profile['driver_version']:<15}"
              f"CUDA Version: {profile['tool_version']:<9}", 89)),
        "|" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+",
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
        "|                                         |                        |               MIG M. |",
        "|" + "=" * 41 + "+" + "=" * 24 + "+" + "=" * 22 + "|",
    ]
    for card in cards:
        util = 88 if card["processes"] else 0
        lines.append(_row((f" {card['index']:>3}  {profile['model']:<31}On  ", 41),
                          (f"   {card['bus_id']} Off ", 24), (f"{0:>21} ", 22)))
        lines.append(_row((f" N/A   36C    P0{'113W' if util else '72W':>16} /  700W ", 41),
                          (f"{card['used_mib']:>8}MiB / {card['memory_mib']:>6}MiB ", 24),
                          (f"{util:>7}%      Default ", 22)))
        lines.append(_row(("", 41), ("", 24), (f"{'Disabled':>21} ", 22)))
        lines.append(NV_RULE)
    lines += [
        "",
        "+" + "-" * 89 + "+",
        _row((" Processes:", 89)),
        _row(("  GPU   GI   CI              PID   Type   Process name                        GPU Memory ", 89)),
        _row(("        ID   ID                                                               Usage      ", 89)),
        "|" + "=" * 89 + "|",
    ]
    procs = [(card, proc) for card in cards for proc in card["processes"]]
    if not procs:
        lines.append(_row(("  No running processes found", 89)))
    for card, (pid, name) in procs:
        lines.append(_row((f"  {card['index']:>3}   N/A  N/A{pid:>17}      C   {name:<35}"
                           f"{card['proc_mib']:>7}MiB ", 89)))
    lines.append("+" + "-" * 89 + "+")
    return "\n".join(lines) + "\n"


def render_nvidia_compute_apps(cards: list[dict], fields: list[str], options: set[str]) -> str:
    table = {
        "gpu_bus_id": ("gpu_bus_id", lambda c, p: c["bus_id"]),
        "pid": ("pid", lambda c, p: str(p[0])),
        "process_name": ("process_name", lambda c, p: p[1]),
        "used_memory": ("used_gpu_memory [MiB]", lambda c, p: f"{c['proc_mib']} MiB"),
        "used_gpu_memory": ("used_gpu_memory [MiB]", lambda c, p: f"{c['proc_mib']} MiB"),
    }
    lines = [] if "noheader" in options else [", ".join(table[f][0] for f in fields)]
    for card in cards:
        for proc in card["processes"]:
            values = [table[f][1](card, proc) for f in fields]
            if "nounits" in options:
                values = [v[:-4] if v.endswith(" MiB") else v for v in values]
            lines.append(", ".join(values))
    return "\n".join(lines) + ("\n" if lines else "")


# --- hccn_tool (Ascend NIC) -------------------------------------------------------------------------------
def _ascend_address(index: int) -> str:
    return f"192.168.100.{101 + index}"


def render_hccn(args: list[str], profile: dict, faults: dict) -> tuple[str, int]:
    """`hccn_tool -i N -link|-net_health|-ip -g` and `-ping -g address IP`, in the formats of hicann/driver's
    tool_ops.c and ds_net_ext.c (recorded: tests/fixtures/fabric/hccn_tool-*.txt)."""
    try:
        device = int(args[args.index("-i") + 1])
    except (ValueError, IndexError):
        return "Usage: hccn_tool -i <device_id> -link -g\n", 1
    if device not in {d["index"] for d in profile["devices"]} or device in faults.get("missing", []):
        return f"Device {device} does not exist.\n", 1
    down = device in faults.get("link_down", [])
    if "-link" in args:
        return f"link status: {'DOWN' if down else 'UP'}\n", 0
    if "-net_health" in args:
        return f"net health status: {'Init' if down else 'Success'}\n", 0
    if "-ping" in args and "address" in args:
        target = args[args.index("address") + 1] if args.index("address") + 1 < len(args) else ""
        peer = next((d["index"] for d in profile["devices"] if _ascend_address(d["index"]) == target), None)
        lost = down or peer is None or peer in faults.get("link_down", []) or peer in faults.get("missing", [])
        lines = [f"device {device} PING {target}"]
        for seq in range(3):
            lines.append(f"recv time out seq={seq}" if lost else f"recv seq={seq},time=0.0{6 + seq}4000ms")
        lines.append(f"3 packets transmitted, {0 if lost else 3} received, {100 if lost else 0:.2f}% packet loss")
        # the tool exits non-zero when the device reports a time-out (ds_net_ext.c)
        return "\n".join(lines) + "\n", 1 if lost else 0
    if "-ip" in args:
        return f"ipaddr:{_ascend_address(device)}\nnetmask:255.255.255.0\n", 0
    return "hccn_tool (inferfleet simulation): only -link, -net_health, -ip and -ping are simulated\n", 2


# --- hl-smi -n link (Gaudi NIC ports) ---------------------------------------------------------------------
def render_hl_smi_link(argv: list[str], profile: dict, cards: list[dict], faults: dict) -> tuple[str, int]:
    """`hl-smi -n link -i <bus id>`: `port %2d:` and the state, one line per port (hl-smi 1.23.0, recorded:
    tests/fixtures/fabric/hl-smi-n-link-gaudi2e-1.23.0-loop-excerpt.txt)."""
    bus = argv[argv.index("-i") + 1] if "-i" in argv and argv.index("-i") + 1 < len(argv) else None
    card = next((c for c in cards if c["bus_id"].lower() == (bus or "").lower()), None)
    if card is None:
        return "", 1
    down_ports = {tuple(int(x) for x in item.split(":")) for item in faults.get("port_down", [])}
    lines = []
    for port in range(profile.get("fabric", {}).get("ports", 24)):
        down = card["index"] in faults.get("link_down", []) or (card["index"], port) in down_ports
        lines.append(f"port {port:2d}:        {'DOWN' if down else 'UP'}")
    return "\n".join(lines) + "\n", 0


# --- nvidia-smi topo -m -----------------------------------------------------------------------------------
TOPO_LEGEND = """Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
"""


def render_nvidia_topo(profile: dict, cards: list[dict]) -> str:
    """`nvidia-smi topo -m`, tab-separated, as recorded on an 8 x H200 host (NV18 between every pair; this
    profile has no NICs). tests/fixtures/fabric/nvidia-smi-topo-8xh200-nv18-8nic.txt."""
    names = [f"GPU{c['index']}" for c in cards]
    lines = ["\t" + "\t".join(names + ["CPU Affinity", "NUMA Affinity", "GPU NUMA ID"])]
    half = profile.get("cpu_count", 8) // 2
    for card in cards:
        links = [" X " if other is card else "NV18" for other in cards]
        cpus = f"0-{half - 1}" if card["numa_node"] == 0 else f"{half}-{2 * half - 1}"
        lines.append("\t".join([f"GPU{card['index']}", *links, cpus, str(card["numa_node"]), "", "N/A"]))
    return "\n".join(lines) + "\n\n" + TOPO_LEGEND + "\n"


# --- command line -----------------------------------------------------------------------------------------
def _parse_query(argv: list[str], flag_names: tuple[str, ...]) -> tuple[list[str] | None, set[str]]:
    fields = None
    options: set[str] = set()
    for i, arg in enumerate(argv):
        value = None
        for flag in flag_names:
            if arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            elif arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            if value is not None and fields is None:
                fields = [f.strip() for f in value.split(",") if f.strip()]
        if arg.startswith("--format=") or arg == "-f":
            fmt = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            options = {o.strip() for o in fmt.split(",")}
    return fields, options


def main(tool: str, argv: list[str]) -> int:
    profile = simlib.load_profile()
    faults = simlib.load_faults()
    if "--version" in argv or "-v" in argv:
        print(f"{tool} {profile.get('tool_version', '')} ({SIM_NOTE})")
        return 0
    if tool in faults.get("tool_missing", []):  # the link is gone too (boot.sync_tool_links); a caller holding it
        sys.stderr.write(f"{tool}: command not found\n")
        return 127
    if tool == "hccn_tool":
        text, code = render_hccn(argv, profile, faults)
        sys.stdout.write(text)
        return code
    if not profile["devices"]:
        sys.stderr.write(f"{tool}: no devices found ({SIM_NOTE})\n")
        return 9
    cards = simlib.card_states(profile, faults)
    try:
        if tool == "hl-smi" and argv[:2] == ["-n", "link"]:
            text, code = render_hl_smi_link(argv, profile, cards, faults)
            sys.stdout.write(text)
            return code
        if tool == "nvidia-smi" and argv[:2] == ["topo", "-m"]:
            sys.stdout.write(render_nvidia_topo(profile, cards))
            return 0
        if tool == "hl-smi":
            fields, options = _parse_query(argv, ("-Q", "--query-aip", "--query"))
            if fields is None:
                sys.stdout.write(render_hl_smi(profile, cards))
            else:
                sys.stdout.write(render_csv_query(profile, cards, fields, options, HL_QUERY_FIELDS))
        elif tool == "npu-smi":
            if argv[:1] != ["info"]:
                sys.stderr.write("npu-smi (inferfleet simulation): only 'npu-smi info' is simulated\n")
                return 2
            sys.stdout.write(render_npu_smi_info(profile, cards))
        elif tool == "nvidia-smi":
            gpu_fields, options = _parse_query(argv, ("--query-gpu",))
            app_fields, app_options = _parse_query(argv, ("--query-compute-apps",))
            if gpu_fields is not None:
                sys.stdout.write(render_csv_query(profile, cards, gpu_fields, options, NV_QUERY_FIELDS))
            elif app_fields is not None:
                sys.stdout.write(render_nvidia_compute_apps(cards, app_fields, app_options))
            elif "-L" in argv:
                for card in cards:
                    uuid = NV_QUERY_FIELDS["uuid"][1](profile, card)
                    print(f"GPU {card['index']}: {profile['model']} (UUID: {uuid})")
            else:
                sys.stdout.write(render_nvidia_smi(profile, cards))
        else:
            sys.stderr.write(f"inferfleet-sim: unknown tool {tool}\n")
            return 2
    except ValueError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    return 0
