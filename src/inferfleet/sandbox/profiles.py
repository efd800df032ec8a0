"""Simulated hardware profiles for sandbox hosts.

Every figure here describes a SIMULATED machine. Values are taken from recorded real outputs (see
tests/fixtures/README.md for the sources) so that parsers meet the shapes they meet on real hosts, but nothing
measured on a sandbox host says anything about real hardware.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

PLATFORM_BY_PROFILE = {"gaudi2": "gaudi", "ascend910b": "ascend", "h100": "nvidia", "cpu": "cpu"}
GROUP_BY_PLATFORM = {"gaudi": "gaudi", "ascend": "ascend", "nvidia": "nvidia", "cpu": "cpu"}


@dataclass(frozen=True)
class Device:
    index: int
    module_id: int
    bus_id: str
    memory_mib: int
    idle_used_mib: int
    numa_node: int


@dataclass(frozen=True)
class Profile:
    name: str
    platform: str
    model: str
    memory_gib: int
    driver_version: str
    tool_version: str
    devices: tuple[Device, ...]
    device_nodes: tuple[str, ...]
    cpu_count: int = 8
    cpu_governors: tuple[str, ...] = ("performance", "powersave")
    cpu_default_governor: str = "powersave"
    cpu_idle_states: tuple[tuple[str, str, int], ...] = (
        ("POLL", "CPUIDLE CORE POLL IDLE", 0),
        ("C1", "MWAIT 0x00", 2),
        ("C1E", "MWAIT 0x01", 10),
        ("C6", "MWAIT 0x20", 170),
    )
    hugepages_limit: int = 20000
    extra: dict = field(default_factory=dict)
    # The vendor container runtime the host simulates, name -> facts (sim/runtimes.py reads them; a host's
    # /etc/inferfleet-sim/runtimes.json overrides them, e.g. to simulate an older runtime version).
    runtimes: dict = field(default_factory=dict)
    # SIMULATED interconnect: the bus bandwidth (GB/s) a collective reaches between all the host's cards at large
    # message sizes, and the NIC ports of each card (Gaudi). The collective-test stand-ins derive every figure they
    # print from it (sandbox/fabric/); no figure is a measurement of real hardware.
    fabric: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["simulated"] = True
        return data


# index -> module id as recorded on a real 8-card Gaudi2 host (the mapping is not the identity there either).
_GAUDI2_MODULES = (2, 6, 3, 7, 0, 4, 5, 1)
_GAUDI2_BUS = ("0000:33:00.0", "0000:34:00.0", "0000:4e:00.0", "0000:9a:00.0",
               "0000:9b:00.0", "0000:b3:00.0", "0000:b4:00.0", "0000:4d:00.0")
_ASCEND_BUS = ("0000:C1:00.0", "0000:C2:00.0", "0000:81:00.0", "0000:82:00.0",
               "0000:01:00.0", "0000:02:00.0", "0000:41:00.0", "0000:42:00.0")
_NVIDIA_BUS = tuple(f"00000000:{b}:00.0" for b in ("04", "05", "0A", "0B", "84", "85", "8A", "8B"))


def _devices(bus_ids, memory_mib, idle_used_mib, modules=None):
    return tuple(
        Device(index=i, module_id=(modules[i] if modules else i), bus_id=bus, memory_mib=memory_mib,
               idle_used_mib=idle_used_mib, numa_node=0 if i < len(bus_ids) // 2 else 1)
        for i, bus in enumerate(bus_ids)
    )


PROFILES: dict[str, Profile] = {
    "gaudi2": Profile(
        name="gaudi2", platform="gaudi", model="HL-225", memory_gib=96,
        driver_version="1.21.1-bfcec49", tool_version="hl-1.21.1-fw-59.2.3.0",
        devices=_devices(_GAUDI2_BUS, 98304, 768, _GAUDI2_MODULES),
        device_nodes=tuple(f"accel/accel{i}" for i in range(8))
        + tuple(f"accel/accel_controlD{i}" for i in range(8)),
        # habanalabs-container-runtime ships with each Gaudi software release, numbered like it (vault.habana.ai)
        runtimes={"habana-container-runtime": {"version": "1.21.1"}},
        # Gaudi2 has 24 100GbE ports per card (ports 8, 22 and 23 leave the host)
        fabric={"busbw_gbps": 250.0, "ports": 24},
    ),
    "ascend910b": Profile(
        name="ascend910b", platform="ascend", model="910B3", memory_gib=64,
        driver_version="24.1.1", tool_version="24.1.1",
        devices=_devices(_ASCEND_BUS, 65536, 3400),
        device_nodes=tuple(f"davinci{i}" for i in range(8)) + ("davinci_manager", "devmm_svm", "hisi_hdc"),
        # Ascend-docker-runtime (MindCluster); "product" is what DCMI reports (not an Atlas 200 model here)
        runtimes={"ascend-docker-runtime": {"version": "6.0.0", "product": ""}},
        fabric={"busbw_gbps": 160.0},
    ),
    "h100": Profile(
        name="h100", platform="nvidia", model="NVIDIA H100 80GB HBM3", memory_gib=80,
        driver_version="535.129.03", tool_version="12.2",
        devices=_devices(_NVIDIA_BUS, 81559, 0),
        device_nodes=tuple(f"nvidia{i}" for i in range(8)) + ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"),
        # nvidia-container-toolkit 1.17.8: the last release whose runtime resolves mode "auto" to legacy. The
        # NVIDIA_REQUIRE_* checks compare with the driver's CUDA version (tool_version) and the GPU's compute
        # capability (H100: 9.0, developer.nvidia.com/cuda-gpus); NVML's brand is not recorded (None).
        runtimes={"nvidia-container-runtime": {"version": "1.17.8", "arch": "9.0", "brand": None}},
        fabric={"busbw_gbps": 360.0},
    ),
    "cpu": Profile(
        name="cpu", platform="cpu", model="", memory_gib=0,
        driver_version="", tool_version="", devices=(), device_nodes=(),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown sandbox profile {name!r}: choose from {known}") from None


def parse_profiles(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--profiles needs at least one profile name")
    for name in names:
        get_profile(name)
    return names


# Device nodes that belong to one card (the others, e.g. davinci_manager or nvidiactl, serve all of a host's cards)
_PER_CARD_NODE = re.compile(r"^(accel/accel|accel/accel_controlD|davinci|nvidia)(\d+)$")
BASE_PROFILE_BY_PLATFORM = {platform: name for name, platform in PLATFORM_BY_PROFILE.items()}


def derive(platform: str, model: str | None = None, count: int | None = None,
           memory_gib: float | None = None) -> Profile:
    """A SIMULATED host shaped like a declared (or discovered) one: the platform's base profile with the card
    model, card count and card memory of that host. Figures the declaration does not give stay the base's."""
    base = PROFILES[BASE_PROFILE_BY_PLATFORM[platform]]
    if platform == "cpu":
        return base
    count = len(base.devices) if count is None else int(count)
    if not 1 <= count <= len(base.devices):
        raise ValueError(f"the sandbox simulates 1 to {len(base.devices)} {platform} cards per host, not {count}")
    memory_gib = base.memory_gib if memory_gib is None else memory_gib
    # the base's exact MiB where the declared GiB is the base's (an H100 reports 81559 MiB, "80 GiB")
    memory_mib = (base.devices[0].memory_mib if round(memory_gib) == base.memory_gib
                  else int(round(float(memory_gib) * 1024)))
    devices = tuple(replace(device, memory_mib=memory_mib,
                            numa_node=0 if device.index < max(count // 2, 1) else 1)
                    for device in base.devices[:count])
    nodes = tuple(node for node in base.device_nodes
                  if not (m := _PER_CARD_NODE.match(node)) or int(m.group(2)) < count)
    return replace(base, model=model or base.model, memory_gib=memory_gib, devices=devices, device_nodes=nodes)
