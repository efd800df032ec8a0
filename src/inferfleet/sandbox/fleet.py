"""The sandbox fleet: real Linux test hosts (systemd, sshd, room for their own Docker engine) in containers on
this machine, with SIMULATED accelerators, a local registry, and an Ansible inventory describing them.

Everything `up` creates carries the label inferfleet.sandbox=<name> (containers, volumes, network) or is
recorded in <state>/<name>/state.json (registry process, files), so that `down` removes exactly that.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import hub, image, profiles, registry
from .hostenv import ensure_dockerd, ensure_host_packages

LABEL = "inferfleet.sandbox"
STATIC_LABEL = "inferfleet.static-addresses"
SIM_MOUNT = "/usr/local/lib/inferfleet-sim"
# The SIMULATED collective tests the fabric stage builds and runs in the sandbox (fabric/README.md)
FABRIC_STAND_INS = Path(__file__).resolve().parent / "fabric"
DEFAULT_NAME = "inferfleet"
DEFAULT_PROFILES = ("gaudi2", "ascend910b", "h100", "cpu")
# What `sandbox fault` can make a host do (set_fault)
FAULT_KINDS = ("hold", "release", "missing", "present", "link_down", "link_up", "port_down", "port_up", "slow_link",
               "bandwidth_factor", "tool_missing", "tool_present", "collective_wrong", "collective_crash",
               "hugepages_limit", "clear")

# Measured on this kind of machine (../shared/notes/sandbox.md): every flag below was needed for a host that
# runs systemd and its own dockerd without --privileged (which the engine here refuses).
HOST_RUN_OPTIONS = dict(
    cgroupns="private",
    cap_add=["ALL"],
    cap_drop=["SYS_RESOURCE"],
    security_opt=["seccomp=unconfined", "apparmor=unconfined"],
    device_cgroup_rules=["a *:* rwm"],
    devices=["/dev/fuse:/dev/fuse:rwm"],
    stop_signal="SIGRTMIN+3",
    tmpfs={"/run": "exec", "/run/lock": "", "/tmp": "exec"},
    restart_policy={"Name": "unless-stopped"},
)


@dataclass
class HostSpec:
    name: str
    profile: str  # the base profile's name (profiles.PROFILES)
    container: str
    # a host shaped like another one (profiles.derive): its profile, in place of the base's
    shape: dict | None = None

    def profile_json(self) -> dict:
        return self.shape if self.shape is not None else profiles.get_profile(self.profile).to_json()


@dataclass
class HostStatus:
    name: str
    profile: str
    container: str
    state: str
    address: str | None
    simulated: bool = True


@dataclass
class Sandbox:
    """One named sandbox fleet; `name` keeps several (demo, CI) apart on one machine."""

    name: str = DEFAULT_NAME
    state_root: Path | None = None
    registry_port: int = 5000
    log: object = print
    _client: object = field(default=None, repr=False)

    # --- locations --------------------------------------------------------------------------------------
    @property
    def state(self) -> Path:
        from ..paths import state_dir

        return (self.state_root or state_dir()) / self.name

    @property
    def key_path(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def mirror_port(self) -> int:
        return self.registry_port + 1

    @property
    def hub_port(self) -> int:
        return self.registry_port + 2

    @property
    def network_name(self) -> str:
        return f"{self.name}-sandbox"

    @property
    def client(self):
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=120)
        return self._client

    def _labels(self, **extra: str) -> dict[str, str]:
        return {LABEL: self.name, **extra}

    def _read_state(self) -> dict:
        path = self.state / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_state(self, data: dict) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "state.json").write_text(json.dumps(data, indent=2, sort_keys=True))

    # --- plan -------------------------------------------------------------------------------------------
    def plan_hosts(self, hosts: int | None, profile_names: list[str]) -> list[HostSpec]:
        count = len(profile_names) if hosts is None else hosts
        if count < 1:
            raise ValueError("--hosts must be at least 1")
        specs, seen = [], {}
        for i in range(count):
            profile = profile_names[i % len(profile_names)]
            seen[profile] = seen.get(profile, 0) + 1
            host = f"{profile}-{seen[profile]}"
            specs.append(HostSpec(name=host, profile=profile, container=f"{self.name}-{host}"))
        return specs

    # --- up ---------------------------------------------------------------------------------------------
    def up(self, hosts: int | None = None, profile_names: list[str] | None = None,
           inventory_dir: Path | None = None, extra_ca: Path | None = None, serving: bool = True,
           specs: list[HostSpec] | None = None) -> list[HostStatus]:
        """Create or update the fleet: `hosts` hosts dealt over `profile_names`, or exactly `specs` (a rehearsal's
        hosts, named and shaped like another inventory's)."""
        profile_names = list(profile_names or DEFAULT_PROFILES)
        specs = specs or self.plan_hosts(hosts, profile_names)
        started = time.monotonic()
        ensure_host_packages(self.log)
        ensure_dockerd(self.log)
        # the vLLM wheelhouse downloads while the host image builds, and the hosts boot while the vLLM image builds
        wheelhouse = self._download_wheelhouse() if serving else None
        tag = image.build(self.client, extra_ca, log=self.log)
        self._ensure_key()
        network = self._ensure_network()
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        subnet = ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])
        state = self._read_state()
        reg = registry.ensure(self.state / "registry", self.registry_port, state.get("registry_pid"), self.log)
        # a second registry as the fleet's LAN mirror (the images stage fills it from "upstream" once)
        mirror = registry.ensure(self.state / "mirror", self.mirror_port, state.get("mirror_pid"), self.log)
        state.update(registry_pid=reg.pid, mirror_pid=mirror.pid, registry_port=self.registry_port, image=tag,
                     hosts=[s.__dict__ for s in specs])
        self._write_state(state)
        wanted = {s.container for s in specs}
        for container in self._containers():
            if container.name not in wanted:
                self.log(f"removing {container.name} (not in the requested fleet)")
                self._remove_container(container)
        addresses = assign_addresses([s.name for s in specs], subnet, state.get("addresses", {}))
        state["addresses"] = addresses
        self._write_state(state)
        for spec in specs:
            self._ensure_host(spec, tag, addresses[spec.name])
        # without serving the fleet runs every other stage: the planner plans no services
        serving_vars = (self._prepare_serving(f"{gateway}:{self.registry_port}", wheelhouse) if serving
                        else {"inferfleet_serving": False})
        serving_vars["inferfleet_sandbox_fabric_dir"] = str(FABRIC_STAND_INS)
        state = self._read_state()  # serving recorded the hub's process
        statuses = self.status()
        self._wait_ready(statuses)
        inventory_dir = inventory_dir or self.default_inventory_dir()
        write_inventory(inventory_dir, statuses, self.key_path, f"{gateway}:{self.registry_port}", self.name,
                        mirror_address=f"{gateway}:{self.mirror_port}", extra_vars=serving_vars)
        state["inventory"] = str(inventory_dir / "hosts.yml")
        self._write_state(state)
        self.log(f"sandbox '{self.name}' up: {len(statuses)} host(s) in {time.monotonic() - started:.1f}s; "
                 f"inventory {inventory_dir / 'hosts.yml'}; registry {gateway}:{self.registry_port}")
        return statuses

    @staticmethod
    def _serving_cache() -> Path:
        from ..paths import project_dir
        return project_dir() / ".cache"

    def _download_wheelhouse(self) -> concurrent.futures.Future | None:
        """The vLLM wheelhouse's download, started in the background when the serving image must be built."""
        from . import vllm_image

        if self.client.images.list(name=vllm_image.image_tag()):
            return None
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wheelhouse")
        future = pool.submit(vllm_image.wheelhouse, self._serving_cache().resolve() / "wheelhouse", self.log)
        pool.shutdown(wait=False)
        return future

    def _prepare_serving(self, registry_address: str, wheelhouse: concurrent.futures.Future | None = None) -> dict:
        """The vLLM CPU image in the sandbox registry and the models on this machine; their inventory vars."""
        from . import vllm_image

        cache = self._serving_cache()
        if wheelhouse is not None:
            wheelhouse.result()  # raises what the download raised
        tag = vllm_image.build(self.client, cache, self.log)
        vllm_image.push(self.client, tag, self.registry_port, self.log)
        models = vllm_image.make_models(self.client, tag, cache / "models", self.log)
        # the models stage fetches them from a local hub, with the hubs' own clients
        for model in vllm_image.MODELS:
            hub.publish(self.hub_root, f"inferfleet/{model}", models / model)
        state = self._read_state()
        state["hub_pid"] = hub.ensure(self.hub_root, self.hub_port, state.get("hub_pid"), self.log)
        self._write_state(state)
        return {"inferfleet_sandbox_vllm_image": f"{registry_address}/inferfleet/vllm-cpu:{vllm_image.VLLM_VERSION}",
                "inferfleet_sandbox_models_dir": str(models),
                "inferfleet_sandbox_hub": f"http://127.0.0.1:{self.hub_port}"}

    @property
    def hub_root(self) -> Path:
        return self.state / "hub"

    def default_inventory_dir(self) -> Path:
        from ..paths import project_dir

        return project_dir() / "inventories" / "sandbox"

    def _ensure_key(self) -> None:
        if not self.key_path.exists():
            self.state.mkdir(parents=True, exist_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"inferfleet-{self.name}",
                            "-f", str(self.key_path)], check=True)

    def _ensure_network(self):
        """The sandbox's bridge network, with a subnet of our choosing: hosts get fixed addresses, so a host
        keeps its inventory address across the reboots the tune stage does (Docker re-deals automatic ones)."""
        found = self.client.networks.list(names=[self.network_name])
        if found:
            network = self.client.networks.get(found[0].id)
            if network.attrs.get("Labels", {}).get(STATIC_LABEL) == "1":
                return network
            self.log(f"recreating network {self.network_name} with fixed addresses")
            for container in self._containers():
                self._remove_container(container)
            network.remove()
        used = []
        for other in self.client.networks.list():
            for config in (self.client.networks.get(other.id).attrs.get("IPAM") or {}).get("Config") or []:
                if config.get("Subnet"):
                    used.append(ipaddress.ip_network(config["Subnet"], strict=False))
        import docker

        subnet = free_subnet(used + local_routes())
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet),
                                                                           gateway=str(subnet[1]))])
        return self.client.networks.create(self.network_name, driver="bridge", ipam=ipam,
                                           labels=self._labels(**{STATIC_LABEL: "1"}))

    def _containers(self, all_states: bool = True):
        return self.client.containers.list(all=all_states, filters={"label": f"{LABEL}={self.name}"})

    def _host_dir(self, spec: HostSpec) -> Path:
        return self.state / "hosts" / spec.name

    def _ensure_host(self, spec: HostSpec, tag: str, address: str) -> None:
        sim_dir = self._host_dir(spec) / "sim"
        sim_dir.mkdir(parents=True, exist_ok=True)
        (sim_dir / "profile.json").write_text(json.dumps(spec.profile_json(), indent=2))
        faults = sim_dir / "faults.json"
        if not faults.exists():
            faults.write_text("{}\n")
        existing = self.client.containers.list(all=True, filters={"name": f"^{spec.container}$"})
        if existing:
            container = existing[0]
            same = (container.labels.get("inferfleet.image") == tag
                    and container.labels.get("inferfleet.profile") == spec.profile
                    and container.labels.get("inferfleet.shape", "") == self._shape_label(spec)
                    and self._address(container) in (address, None))
            if same:
                if container.status != "running":
                    self.log(f"starting {spec.container}")
                    container.start()
                return
            self.log(f"recreating {spec.container} (image or profile changed)")
            self._remove_container(container)
        # A new host starts with an empty Docker: a volume its name left behind (its container removed by hand) holds
        # containers that bind paths of a root file system that is gone, and they would restart on boot.
        volume = self._docker_volume(spec.container)
        if self._remove_docker_volume(spec.container):
            self.log(f"removed {volume}, left by a host removed without `sandbox down`")
        self.client.volumes.create(volume, labels=self._labels())
        self.log(f"creating host {spec.name} ({spec.profile}, SIMULATED accelerators)")
        self.client.containers.run(
            tag, detach=True, name=spec.container, hostname=spec.name, network=self.network_name,
            networking_config={self.network_name: self.client.api.create_endpoint_config(ipv4_address=address)},
            labels=self._labels(**{"inferfleet.host": spec.name, "inferfleet.profile": spec.profile,
                                   "inferfleet.image": tag, "inferfleet.shape": self._shape_label(spec)}),
            volumes={
                volume: {"bind": "/var/lib/docker", "mode": "rw"},
                str(image.SIM_DIR): {"bind": SIM_MOUNT, "mode": "ro"},
                str(sim_dir): {"bind": "/etc/inferfleet-sim", "mode": "ro"},
                str(self.key_path) + ".pub": {"bind": "/root/.ssh/authorized_keys", "mode": "ro"},
            },
            **HOST_RUN_OPTIONS,
        )

    @staticmethod
    def _shape_label(spec: HostSpec) -> str:
        """Which shape a host was created with (the sim reads profile.json at boot: another shape, another host)."""
        if spec.shape is None:
            return ""
        return hashlib.sha256(json.dumps(spec.shape, sort_keys=True).encode()).hexdigest()[:12]

    @staticmethod
    def _docker_volume(container_name: str) -> str:
        """The volume a host keeps its /var/lib/docker in."""
        return f"{container_name}-docker"

    def _remove_docker_volume(self, container_name: str) -> bool:
        """Remove this sandbox's Docker volume of a host, if there is one; whether there was."""
        name = self._docker_volume(container_name)
        removed = False
        for volume in self.client.volumes.list(filters={"name": name}):
            if volume.name == name and (volume.attrs.get("Labels") or {}).get(LABEL) == self.name:
                volume.remove(force=True)
                removed = True
        return removed

    def _remove_container(self, container) -> None:
        container.remove(force=True)
        self._remove_docker_volume(container.name)

    def _wait_ready(self, statuses: list[HostStatus], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for host in statuses:
            while True:
                if host.address and self._ssh_ok(host.address):
                    break
                if time.monotonic() > deadline:
                    logs = self.client.containers.get(host.container).logs(tail=20).decode(errors="replace")
                    raise TimeoutError(f"sandbox host {host.name} did not accept SSH within {timeout:.0f}s\n{logs}")
                time.sleep(0.2)
                host.address = host.address or self._address(self.client.containers.get(host.container))

    def _ssh_ok(self, address: str) -> bool:
        try:
            with socket.create_connection((address, 22), timeout=1) as sock:
                if not sock.recv(64).startswith(b"SSH-"):
                    return False
        except OSError:
            return False
        result = subprocess.run(
            ["ssh", *ssh_options(self.key_path), f"root@{address}",
             "systemctl is-active --quiet inferfleet-sim-boot.service"],
            capture_output=True, timeout=20,
        )
        return result.returncode == 0

    # --- status / down ----------------------------------------------------------------------------------
    def _address(self, container) -> str | None:
        networks = container.attrs.get("NetworkSettings", {}).get("Networks", {})
        net = networks.get(self.network_name) or {}
        return net.get("IPAddress") or None

    def status(self) -> list[HostStatus]:
        try:
            containers = self._containers()
        except Exception:  # no engine: nothing of ours can be running
            return []
        result = []
        for container in sorted(containers, key=lambda c: c.name):
            container.reload()
            result.append(HostStatus(
                name=container.labels.get("inferfleet.host", container.name),
                profile=container.labels.get("inferfleet.profile", "?"),
                container=container.name, state=container.status, address=self._address(container)))
        return result

    def down(self) -> list[str]:
        """Remove what `up` created for this sandbox; return what was removed."""
        removed = []
        state = self._read_state()
        try:
            client = self.client
            for container in self._containers():
                self._remove_container(container)
                removed.append(f"container {container.name}")
            for volume in client.volumes.list(filters={"label": f"{LABEL}={self.name}"}):
                volume.remove(force=True)
                removed.append(f"volume {volume.name}")
            for network in client.networks.list(filters={"label": f"{LABEL}={self.name}"}):
                network.remove()
                removed.append(f"network {network.name}")
        except Exception as err:  # engine gone: nothing of ours runs there
            if "Connection" not in type(err).__name__ and "connect" not in str(err).lower():
                raise
        if registry.stop(state.get("registry_pid")):
            removed.append(f"registry process {state['registry_pid']}")
        if registry.stop(state.get("mirror_pid")):
            removed.append(f"mirror process {state['mirror_pid']}")
        if hub.stop(state.get("hub_pid")):
            removed.append(f"model hub process {state['hub_pid']}")
        inventory = state.get("inventory")
        if inventory and Path(inventory).exists():
            Path(inventory).unlink()
            removed.append(f"inventory {inventory}")
        for sub in ("hosts", "state.json"):
            path = self.state / sub
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return removed

    # --- faults -----------------------------------------------------------------------------------------
    def set_fault(self, host: str, kind: str, value=None) -> dict:
        """Make a simulated host misbehave; kinds: hold, release, missing, present, link_down, link_up, port_down
        CARD:PORT, port_up, slow_link CARD:FACTOR, bandwidth_factor, tool_missing TOOL, tool_present,
        collective_wrong, collective_crash, hugepages_limit, clear."""
        spec = next((s for s in self._read_state().get("hosts", []) if s["name"] == host), None)
        if spec is None:
            raise KeyError(f"no sandbox host named {host!r} in sandbox {self.name!r}")
        container = self.client.containers.get(spec["container"])
        faults_path = self.state / "hosts" / host / "sim" / "faults.json"
        faults = json.loads(faults_path.read_text())
        if kind in ("hold", "release"):
            code, output = container.exec_run([f"{SIM_MOUNT}/inferfleet-sim", kind, str(int(value))])
            if code != 0:
                raise RuntimeError(output.decode(errors="replace"))
            return faults
        list_kinds = {"missing": ("missing", True, int), "present": ("missing", False, int),
                      "link_down": ("link_down", True, int), "link_up": ("link_down", False, int),
                      "port_down": ("port_down", True, _card_port), "port_up": ("port_down", False, _card_port),
                      "tool_missing": ("tool_missing", True, str), "tool_present": ("tool_missing", False, str)}
        switches = {"collective_wrong", "collective_crash"}
        if kind in list_kinds:
            key, add, parse = list_kinds[kind]
            items = set(faults.get(key, []))
            items = items | {parse(value)} if add else items - {parse(value)}
            faults[key] = sorted(items)
        elif kind == "slow_link":  # CARD:FACTOR, the card's links run at FACTOR of their bandwidth
            card, factor = str(value).split(":")
            faults.setdefault("slow_link", {})[str(int(card))] = float(factor)
        elif kind in switches:
            faults[kind] = True
        elif kind in ("bandwidth_factor", "hugepages_limit"):
            faults[kind] = float(value) if kind == "bandwidth_factor" else int(value)
        elif kind == "clear":
            faults = {}
        else:
            raise ValueError(f"unknown fault {kind!r}")
        faults_path.write_text(json.dumps(faults, indent=2, sort_keys=True) + "\n")
        container.exec_run([f"{SIM_MOUNT}/inferfleet-sim", "apply-faults"])
        return faults


def _card_port(value) -> str:
    card, port = str(value).split(":")
    return f"{int(card)}:{int(port)}"


def local_routes() -> list[ipaddress.IPv4Network]:
    """Networks this machine already routes (a sandbox subnet must not shadow them)."""
    proc = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True)
    routes = []
    for line in proc.stdout.splitlines():
        target = line.split()[0] if line.strip() else ""
        if target and target != "default":
            try:
                routes.append(ipaddress.ip_network(target, strict=False))
            except ValueError:
                continue
    return routes


def free_subnet(used: list, pool: str = "10.213.0.0/16") -> ipaddress.IPv4Network:
    """The first /24 of `pool` that overlaps none of `used`."""
    for candidate in ipaddress.ip_network(pool).subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError(f"no free /24 left in {pool} for a sandbox network")


def assign_addresses(names: list[str], subnet: ipaddress.IPv4Network, known: dict[str, str]) -> dict[str, str]:
    """A fixed address per host: the one it had (if still in the subnet), else the lowest free one from .10."""
    addresses = {name: known[name] for name in names
                 if name in known and ipaddress.ip_address(known[name]) in subnet}
    taken = set(addresses.values())
    hosts = (str(ip) for ip in list(subnet.hosts())[9:])
    for name in names:
        if name not in addresses:
            address = next(ip for ip in hosts if ip not in taken)
            addresses[name] = address
            taken.add(address)
    return addresses


def ssh_options(key_path: Path) -> list[str]:
    return ["-i", str(key_path), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def write_inventory(directory: Path, hosts: list[HostStatus], key_path: Path, registry_address: str,
                    sandbox_name: str, mirror_address: str | None = None, extra_vars: dict | None = None) -> Path:
    groups: dict[str, dict] = {}
    for host in hosts:
        profile = profiles.get_profile(host.profile)
        group = profiles.GROUP_BY_PLATFORM[profile.platform]
        host_vars = {
            "ansible_host": host.address,
            "inferfleet_platform": profile.platform,
            "inferfleet_sandbox_profile": host.profile,
        }
        if profile.devices:
            host_vars["inferfleet_accelerator"] = {
                "model": profile.model, "count": len(profile.devices), "memory_gib": profile.memory_gib}
        groups.setdefault(group, {"hosts": {}})["hosts"][host.name] = host_vars
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key_path),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3",
                "inferfleet_sandbox": sandbox_name,
                "inferfleet_simulated": True,
                "inferfleet_sandbox_registry": registry_address,
                "inferfleet_docker_hub_mirror": f"http://{registry_address}",
                **({"inferfleet_sandbox_mirror": f"http://{mirror_address}"} if mirror_address else {}),
                **(extra_vars or {}),
                "inferfleet_insecure_registries": [registry_address] + ([mirror_address] if mirror_address else []),
            },
            "children": groups,
        }
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.yml"
    header = (f"# Written by `inferfleet sandbox up` (sandbox '{sandbox_name}'). Do not edit: it is rewritten.\n"
              "# Every accelerator in this inventory is SIMULATED (fake device nodes and vendor-tool emulators).\n")
    path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    return path
