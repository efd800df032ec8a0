"""SIMULATED vendor container runtimes of a sandbox host: habana-container-runtime, nvidia-container-runtime,
ascend-docker-runtime (runs inside a sandbox host with Debian's python3, stdlib only).

They are OCI runtimes, as the real ones are: dockerd/containerd call `<runtime> [global options] create --bundle
DIR ... ID` and then start, state, kill, delete. On `create` the shim reads DIR/config.json, reads process.env the
way the vendor's runtime (and its prestart hook) reads it, adds to the spec the device nodes the variables name
(linux.devices from the host node's lstat, one linux.resources.devices allow rule each) and, for Ascend, the
driver files its hook would mount; it writes the spec back and execs runc with the original arguments. Every other
command execs runc unchanged. Where the real runtime refuses the container, the shim prints the vendor's error text
and exits 1 without running runc, and writes the error to the --log file the way runc does, so `docker run` fails
with that text.

Every rule carries its source (repository, tag or commit, file) in a comment; tests/fixtures/runtimes/README.md
lists them, with the facts that could not be sourced. Nothing here touches real accelerators.

Which version a host's runtime is: the profile's `runtimes` facts, overridden by /etc/inferfleet-sim/runtimes.json
(the host's sim directory on the controller, so a test can simulate an older runtime without a restart) and by
/run/inferfleet-sim/runtimes.json (writable from inside the host, gone at reboot).
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat as stat_mod
import sys
import time

try:
    from . import simlib
except ImportError:  # run as a plain script inside a sandbox host
    import simlib  # type: ignore[no-redef]

SIM_NOTE = "inferfleet sandbox: SIMULATED"
HABANA, NVIDIA, ASCEND = "habana-container-runtime", "nvidia-container-runtime", "ascend-docker-runtime"
RUNTIME_NAMES = (HABANA, NVIDIA, ASCEND)
OVERRIDE_PATHS = (os.path.join(simlib.CONFIG_DIR, "runtimes.json"),
                  os.path.join(simlib.SIM_ROOT, "run/inferfleet-sim/runtimes.json"))
SIM_LOG = os.path.join(simlib.SIM_ROOT, "var/log/inferfleet-sim/runtimes.log")

# Defaults where neither the profile nor an override says otherwise.
DEFAULTS = {
    # habana: config/config.go defaultConfig() (HabanaAI/habana-container-runtime v1.16.0): mode "oci",
    # visible_devices_all_as_default true, mount_accelerators true.
    HABANA: {"version": "1.21.1", "mode": "oci", "visible_devices_all_as_default": True,
             "honours_visible_modules": None},
    # nvidia: mode "auto" (NVIDIA/nvidia-container-toolkit config default); accept-nvidia-visible-devices-envvar-
    # when-unprivileged defaults to true (packaged config.toml); cuda_version/driver_version/arch describe the GPUs.
    NVIDIA: {"version": "1.17.8", "mode": "auto", "accept_envvar_unprivileged": True, "disable_require": False,
             "cuda_version": "", "driver_version": "", "arch": "", "brand": None},
    # ascend: the rules follow Ascend/mind-cluster component/ascend-docker-runtime (the runtime's current home);
    # the version is informational (no rule below switches on it).
    ASCEND: {"version": "6.0.0", "product": ""},
}


class Refusal(Exception):
    """The real runtime refuses the container. `stderr` is what the runtime process prints; `docker` is the
    message the container engine reports (written to runc's --log file, which containerd reads)."""

    def __init__(self, stderr: str, docker: str | None = None, note: str = ""):
        super().__init__(stderr)
        self.stderr = stderr
        self.docker = docker if docker is not None else stderr
        self.note = note


class Result:
    def __init__(self, spec: dict):
        self.spec = spec
        self.devices: list[str] = []
        self.mounts: list[str] = []
        self.env: list[str] = []
        self.notes: list[str] = []


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric parts of a version: '1.21.1-16' -> (1, 21, 1), '7.0.RC1' -> (7, 0)."""
    parts = []
    for piece in re.split(r"[.\-+]", str(text)):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


# --- the host as a runtime sees it --------------------------------------------------------------------------
class Host:
    """Device nodes, files and cards of a sandbox host. Paths are host paths; `root` prefixes them (tests).
    Subclasses (tests) replace lstat/stat/listdir to describe a host without touching the file system."""

    def __init__(self, profile: dict, faults: dict | None = None, root: str = simlib.SIM_ROOT):
        self.profile = profile
        self.faults = faults or {}
        self.root = root

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def lstat(self, path: str):
        return os.lstat(self._real(path))

    def stat(self, path: str):
        return os.stat(self._real(path))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._real(path))

    def read_text(self, path: str) -> str:
        with open(self._real(path), encoding="utf-8") as handle:
            return handle.read()

    def node(self, path: str) -> tuple[dict | None, str]:
        """(device entry, '') for a char/block node, else (None, why) with Go's wording of the lstat error."""
        try:
            st = self.lstat(path)
        except FileNotFoundError:
            return None, "no such file or directory"
        except OSError as err:
            return None, (err.strerror or str(err)).lower()
        if stat_mod.S_ISCHR(st.st_mode):
            kind = "c"
        elif stat_mod.S_ISBLK(st.st_mode):
            kind = "b"
        else:
            return None, "not a device node"
        return {"path": path, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                "fileMode": stat_mod.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}, ""

    def kind(self, path: str) -> str | None:
        """'dir', 'file' or None (missing or other), following symlinks like Go's os.Stat."""
        try:
            st = self.stat(path)
        except OSError:
            return None
        if stat_mod.S_ISDIR(st.st_mode):
            return "dir"
        if stat_mod.S_ISREG(st.st_mode):
            return "file"
        return None

    def cards(self) -> list[dict]:
        missing = set(self.faults.get("missing", []))
        return [d for d in self.profile.get("devices", []) if d["index"] not in missing]


def load_config(tool: str, profile: dict, paths=OVERRIDE_PATHS) -> dict:
    config = dict(DEFAULTS[tool])
    config.update((profile.get("runtimes") or {}).get(tool, {}))
    for path in paths:
        config.update(simlib.load_json(path, {}).get(tool, {}))
    return config


# --- spec edits shared by the three runtimes ----------------------------------------------------------------
def _env(spec: dict) -> list[str]:
    return list((spec.get("process") or {}).get("env") or [])


def _env_map(env: list[str]) -> dict[str, str]:
    """NAME -> value, later entries winning: how runc (1.1 populateProcessEnvironment: os.Setenv in order; 1.2
    prepareEnv: 'keeping only the last value for each key') and the NVIDIA toolkit (internal/config/image/
    builder.go WithEnv) read the list."""
    found = {}
    for entry in env:
        name, sep, value = entry.partition("=")
        if sep:
            found[name] = value
    return found


def _append_env(spec: dict, result: Result, entry: str) -> None:
    spec.setdefault("process", {}).setdefault("env", []).append(entry)
    result.env.append(entry)


def _add_device(spec: dict, result: Result, node: dict, container_path: str | None = None) -> None:
    linux = spec.setdefault("linux", {})
    devices = linux.get("devices") or []
    entry = dict(node, path=container_path or node["path"])
    if not any(d.get("path") == entry["path"] for d in devices):
        devices.append(entry)
        result.devices.append(entry["path"])
    linux["devices"] = devices
    rules = linux.setdefault("resources", {}).get("devices") or []
    rule = {"allow": True, "type": node["type"], "major": node["major"], "minor": node["minor"], "access": "rwm"}
    if rule not in rules:
        rules.append(rule)
    linux["resources"]["devices"] = rules


def _add_bind(spec: dict, result: Result, path: str) -> None:
    mounts = spec.setdefault("mounts", [])
    if any(m.get("destination") == path for m in mounts):
        return
    mounts.append({"destination": path, "type": "bind", "source": path, "options": ["rbind", "rprivate", "ro"]})
    result.mounts.append(path)


def _hook_failure(spec: dict, stderr: str) -> str:
    """What runc 1.1 (Debian bookworm's runc 1.1.5, the sandbox hosts' runc) logs when a prestart hook the vendor
    runtime appended exits 1: recorded in NVIDIA/nvidia-container-toolkit issue #29 and user reports quoted in
    tests/fixtures/runtimes/README.md ('error running hook #0: error running hook: exit status 1, stdout: ,
    stderr: ...'). The vendor runtimes append their hook after the ones already present."""
    index = len((spec.get("hooks") or {}).get("prestart") or [])
    return ("runc create failed: unable to start container process: error during container init: "
            f"error running hook #{index}: error running hook: exit status 1, stdout: , stderr: {stderr}")


# --- habana-container-runtime -------------------------------------------------------------------------------
# Source: HabanaAI/habana-container-runtime (github), tags v1.14.1, v1.15.0 and branch v1.16.0 (commit fae7d6c,
# 2024-06-06, the last published source): cmd/habana-container-runtime/main.go handleRequest, specs.go
# filterDevicesByENV / addAcceleratorDevices / addAcceleratorModuleIDs, discover/discover.go.
MODULES_EXPORTED_SINCE = (1, 16)  # v1.16.0 specs.go addAcceleratorModuleIDs: appends HABANA_VISIBLE_MODULES
# NOT SOURCED: the first release whose runtime selects cards by HABANA_VISIBLE_MODULES. docs.habana.ai "Multiple
# Dockers Each with a Single Workload" (latest) says habanalabs-container-runtime mounts cards by
# HABANA_VISIBLE_DEVICES or HABANA_VISIBLE_MODULES; every published source up to v1.16.0 reads only
# HABANA_VISIBLE_DEVICES. The boundary is taken as the first release after v1.16 and can be set per host
# (runtimes.json "honours_visible_modules").
MODULES_SELECT_SINCE = (1, 17)


def _habana_module_map(host: Host) -> dict[int, int]:
    """module id -> index, as `hl-smi -Q index,module_id -f csv` (the emulator) prints it."""
    return {card["module_id"]: card["index"] for card in host.cards()}


def habana(spec: dict, host: Host, config: dict, result: Result) -> None:
    version = version_tuple(config["version"])
    env = _env(spec)
    honours_modules = config.get("honours_visible_modules")
    if honours_modules is None:
        honours_modules = version >= MODULES_SELECT_SINCE
    # main.go IsHabanaContainer: any env entry with the prefix HABANA_VISIBLE_DEVICES.
    is_habana = any(e.startswith("HABANA_VISIBLE_DEVICES") for e in env)
    if honours_modules:  # (not sourced, see MODULES_SELECT_SINCE) a modules request marks a Habana container too
        is_habana = is_habana or any(e.startswith("HABANA_VISIBLE_MODULES") for e in env)
    # main.go handleRequest: `if !cfg.Runtime.AlwaysMount && !IsHabanaContainer(spec) { return nil }`
    if not config.get("visible_devices_all_as_default", True) and not is_habana:
        result.notes.append("not a Habana container and visible_devices_all_as_default is false: no cards")
        return
    if config.get("mode") == "legacy":
        result.notes.append("mode legacy (prestart hook + habana-container-cli) is simulated like mode oci")
    # discover.go AcceleratorDevices: filepath.Glob("/dev/accel/accel*") (sorted; accel<i> and accel_controlD<i>)
    try:
        names = sorted(n for n in host.listdir("/dev/accel") if n.startswith("accel"))
    except OSError:
        names = []
    available = [f"/dev/accel/{n}" for n in names]
    requested = _habana_filter(env, available, "HABANA_VISIBLE_DEVICES")
    if honours_modules and any(e.startswith("HABANA_VISIBLE_MODULES") for e in env):
        modules = _habana_modules_request(env, host)
        if not any(e.startswith("HABANA_VISIBLE_DEVICES") for e in env):
            requested = [d for d in available if modules is None or d[-1] in modules]
        elif modules is not None and set(_ids(requested)) != set(modules):
            # NOT SOURCED: what a modules-aware runtime does when both variables disagree. The sandbox refuses, so
            # that a plan naming two different sets of cards cannot pass here.
            devices_value = _first_value(env, "HABANA_VISIBLE_DEVICES")
            modules_value = _first_value(env, "HABANA_VISIBLE_MODULES")
            raise Refusal(f"ERROR: {SIM_NOTE} habana-container-runtime: HABANA_VISIBLE_DEVICES={devices_value} "
                          f"and HABANA_VISIBLE_MODULES={modules_value} name different cards (module ids map to "
                          f"indices {','.join(sorted(modules)) or 'none'}); the real runtime's behaviour with both "
                          "variables set is not documented, so the sandbox refuses")
    ids = _ids(requested)  # discover.go DevicesIDs: unique last characters, in order
    if not ids:
        # main.go: logger.Info("No habanalabs accelerators found"); return nil -> runc runs, the container has no
        # card. v1.16.0 adds addErrorEnvVar(spec, "no accelerators found"), quoted with strconv.Quote.
        result.notes.append("No habanalabs accelerators found: the container starts without cards")
        if version >= MODULES_EXPORTED_SINCE and not any(e.startswith("HABANA_RUNTIME_ERROR") for e in env):
            _append_env(spec, result, 'HABANA_RUNTIME_ERROR="no accelerators found"')
        return
    for dev_id in ids:
        if version >= MODULES_EXPORTED_SINCE:
            # v1.16.0 addAcceleratorDevices: every globbed node whose last character is the id
            paths = [d for d in available if d[-1] == dev_id]
        else:
            # v1.14.1/v1.15.0 addAcceleratorDevices: /dev/accel/accel<id> and /dev/accel/accel_controlD<id>
            paths = [f"/dev/accel/accel{dev_id}", f"/dev/accel/accel_controlD{dev_id}"]
        for path in paths:
            node, why = host.node(path)
            if node is None:
                # The real runtime prints this and exits 0 without running runc (main.go prints "ERROR: %s" and
                # returns); containerd then fails on the missing pid file. The sandbox exits 1.
                raise Refusal(f"ERROR: adding accelerator devices: device info: lstat {path}: {why}")
            _add_device(spec, result, node)
    if version >= MODULES_EXPORTED_SINCE:
        # v1.16.0 addAcceleratorModuleIDs: module ids of the requested cards, sort.Strings, appended as
        # HABANA_VISIBLE_MODULES (runc keeps the last value of a key, so it replaces one the user set). The real
        # runtime reads /sys/class/accel/accel<i>/device/module_id; the sandbox uses the profile's map.
        module_of = {card["index"]: card["module_id"] for card in host.cards()}
        modules = sorted(str(module_of.get(int(i), "")) for i in ids)
        _append_env(spec, result, "HABANA_VISIBLE_MODULES=" + ",".join(modules))


def _first_value(env: list[str], prefix: str) -> str | None:
    for entry in env:
        if entry.startswith(prefix):
            _, sep, value = entry.partition("=")
            return value if sep else None
    return None


def _value(env: list[str], name: str) -> str:
    """The first entry named exactly `name` (Ascend getValueByKey), '' when absent."""
    for entry in env:
        key, sep, value = entry.partition("=")
        if sep and key == name:
            return value
    return ""


def _habana_filter(env: list[str], available: list[str], prefix: str) -> list[str]:
    """specs.go filterDevicesByENV: the first entry with the prefix; 'all' -> every node; else split on ',' (no
    trimming) and keep the nodes whose last character is one of the values; unset -> every node."""
    tokens: list[str] = []
    for entry in env:
        if entry.startswith(prefix):
            _, sep, value = entry.partition("=")
            if sep:
                if value == "all":
                    return available
                tokens = value.split(",")
            break
    if not tokens:
        return available
    return [d for d in available if d[-1] in tokens]


def _habana_modules_request(env: list[str], host: Host) -> list[str] | None:
    """NOT SOURCED (see MODULES_SELECT_SINCE): HABANA_VISIBLE_MODULES translated to card indices with the host's
    module-id map; 'all' or unset -> None (every card); unknown module ids match no card, as unknown indices do."""
    value = _first_value(env, "HABANA_VISIBLE_MODULES")
    if value is None or value == "all":
        return None
    index_of = _habana_module_map(host)
    indices = []
    for token in value.split(","):
        if token.isdigit() and int(token) in index_of:
            indices.append(str(index_of[int(token)]))
    return indices


def _ids(paths: list[str]) -> list[str]:
    seen: list[str] = []
    for path in paths:
        if path[-1] not in seen:
            seen.append(path[-1])
    return seen


# --- nvidia-container-runtime (legacy mode) -----------------------------------------------------------------
# Sources: NVIDIA/nvidia-container-toolkit v1.17.8: internal/config/image/cuda_image.go (IsLegacy,
# DevicesFromEnvvars, GetRequirements, HasDisableRequire), internal/config/image/devices.go (NewVisibleDevices),
# cmd/nvidia-container-runtime-hook/main.go and container_config.go (doPrestart, getDevices), internal/info/auto.go
# (resolveMode); v1.18.0-rc.1 CHANGELOG "Default to jit-cdi mode in the nvidia runtime". NVIDIA/libnvidia-container:
# src/cli/common.c (select_devices), src/cli/configure.c (configure_command), src/cli/dsl.c (dsl_evaluate),
# src/nvc_internal.h and src/nvc_info.c (driver device nodes).
JIT_CDI_SINCE = (1, 18)
NV_DRIVER_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def _nv_uuid(index: int) -> str:
    # the format the nvidia-smi emulator prints (emulators.NV_QUERY_FIELDS["uuid"])
    return f"GPU-5e1a{index:04x}-0000-4000-8000-inferfleetsim"


def nvidia_visible(env: dict[str, str]) -> tuple[str, list[str]]:
    """('void'|'none'|'all'|'list', devices) as the toolkit's DevicesFromEnvvars + NewVisibleDevices decide."""
    legacy_image = bool(env.get("CUDA_VERSION")) and not env.get("NVIDIA_REQUIRE_CUDA")  # CUDA.IsLegacy
    is_set = "NVIDIA_VISIBLE_DEVICES" in env
    devices = [t.strip() for t in env.get("NVIDIA_VISIBLE_DEVICES", "").split(",") if t.strip()]
    if not is_set and legacy_image:
        return "all", ["all"]  # "Environment variable unset with legacy image: default to 'all'"
    if not devices or "void" in devices:
        return "void", []  # "Environment variable unset or empty or 'void': return nil"
    for token in devices:  # NewVisibleDevices: the first special value wins
        if token == "all":
            return "all", ["all"]
        if token == "none":
            return "none", [""]
        if token in ("", "void"):
            return "void", []
    # devices.newDevices/List: a repeated id keeps its last position and leaves an empty slot
    lookup = {}
    for i, token in enumerate(devices):
        lookup[token] = i
    listed = [""] * len(devices)
    for token, i in lookup.items():
        listed[i] = token
    return "list", listed


def _pci_format(token: str) -> str | None:
    """common.c matches_pci_format: sscanf("%x:%02x:%02x.0"), printed back as "%08x:%02x:%02x.0"."""
    match = re.match(r"\s*([0-9a-fA-F]+):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.0", token)
    if not match:
        return None
    domain, bus, device = (int(g, 16) for g in match.groups())
    return f"{domain:08x}:{bus:02x}:{device:02x}.0"


def nvidia_select(tokens: list[str], cards: list[dict]) -> list[dict]:
    """libnvidia-container select_devices: 'all' (any case), a GPU UUID, a PCI bus id or an index; anything else
    is '<dev>: unknown device'. Indices are the ones the nvidia-smi emulator prints (a card the faults removed
    leaves a gap instead of renumbering the others, as NVML would)."""
    selected: list[dict] = []
    for token in ",".join(tokens).split(","):
        if token == "":
            continue  # "Allow extra commas between device strings."
        if token.lower() == "all":
            return list(cards)
        found = None
        if token.lower().startswith("gpu-") and len(token) > 4:
            found = next((c for c in cards if _nv_uuid(c["index"]).lower() == token.lower()), None)
        pci = _pci_format(token)
        if found is None and pci:
            found = next((c for c in cards if c["bus_id"].lower().startswith(pci)), None)
        if found is None:
            number = re.fullmatch(r"\s*\+?(\d+)", token)
            if number:
                found = next((c for c in cards if c["index"] == int(number.group(1))), None)
        if found is None:  # no MIG devices on a sandbox host: MIG-<uuid> and <gpu>:<mig> fall through too
            raise LookupError(f"{token}: unknown device")
        if found not in selected:
            selected.append(found)
    return selected


def dsl_compare_version(v1: str, cmp: str, v2: str):
    """src/cli/dsl.c dsl_compare_version, line for line: True, False or -1 (invalid)."""
    if not re.fullmatch(r"[0-9.]*", v1) or not re.fullmatch(r"[0-9.]*", v2):  # strspn(v, "0123456789.")
        return -1
    i = j = 0
    while i < len(v1) and j < len(v2):
        m1 = re.match(r"\d+", v1[i:])
        m2 = re.match(r"\d+", v2[j:])
        if not m1 or not m2:
            return -1
        n1, n2 = int(m1.group()), int(m2.group())
        if n1 != n2:
            if cmp == "=":
                return False
            if cmp == "!=":
                return True
            if cmp in ("<", "<="):
                return n1 < n2
            return n1 > n2
        i += len(m1.group())
        j += len(m2.group())
        while i < len(v1) and v1[i] == ".":
            i += 1
        while j < len(v2) and v2[j] == ".":
            j += 1
    rest1, rest2 = v1[i:].lstrip(".0"), v2[j:].lstrip(".0")
    if cmp == "!=":
        return bool(rest1 or rest2)
    if cmp in ("=", "<=", ">="):
        if not rest1 and not rest2:
            return True
        if cmp == "=":
            return False
    if cmp in ("<", "<="):
        return not rest1 and bool(rest2)
    return bool(rest1) and not rest2


def dsl_evaluate(predicate: str, facts: dict, device: dict | None):
    """src/cli/dsl.c dsl_evaluate: ' ' separates alternatives, ',' joins conditions. Returns None when satisfied,
    else the error text configure.c prints after 'requirement error: '."""
    operators = ("=", "!=", "<", "<=", ">", ">=")
    ret = True
    for or_expr in predicate.split(" "):
        if or_expr == "":
            continue
        completed = True
        for and_expr in or_expr.split(","):
            if and_expr == "":
                continue
            match = re.match(r"([^<>=!]+)([<>=!]+)(.*)$", and_expr)
            if not match or match.group(2) not in operators or match.group(3) == "":
                return "invalid expression"
            name, op, value = match.group(1).lower(), match.group(2), match.group(3)
            if name == "cuda":
                ret = True if not facts.get("cuda_version") else dsl_compare_version(facts["cuda_version"], op, value)
            elif name == "driver":
                ret = (True if not facts.get("driver_version")
                       else dsl_compare_version(facts["driver_version"], op, value))
            elif name == "arch":  # "No device is visible, assume the arch is ok."
                ret = True if device is None else dsl_compare_version(facts.get("arch", ""), op, value)
            elif name == "brand":  # "No device is visible, assume the brand is ok."; no brand: ok too
                brand = facts.get("brand")
                if device is None or brand is None:
                    ret = True
                elif op in ("=", "!="):  # dsl_compare_string: case-insensitive, only = and !=
                    ret = (brand.lower() == value.lower()) == (op == "=")
                else:
                    ret = -1
            else:
                return "invalid expression"
            if ret == -1:
                return "invalid expression"
            if not ret:
                completed = False
                break
        if completed:
            break
    if ret:
        return None
    first = predicate.split(" ")[0]
    if first.startswith("cuda>="):
        return (f"unsatisfied condition: {first}, please update your driver to a newer version, or use an earlier "
                "cuda container")
    return f"unsatisfied condition: {first}"


def nvidia(spec: dict, host: Host, config: dict, result: Result) -> None:
    env = _env_map(_env(spec))
    version = version_tuple(config["version"])
    mode = config.get("mode", "auto")
    resolved = mode if mode != "auto" else ("jit-cdi" if version >= JIT_CDI_SINCE else "legacy")
    # internal/info/auto.go resolveMode logs through the hook's log.Printf, so the hook's stderr starts with it
    banner = (f"Auto-detected mode as '{resolved}'" if mode == "auto" else f"Using requested mode '{mode}'")
    kind, tokens = nvidia_visible(env)
    if any(re.match(r"^[\w.-]+/[\w.-]+=", t) for t in tokens):
        raise Refusal(f"{SIM_NOTE} nvidia-container-runtime: CDI device names ({','.join(tokens)}) are not "
                      "simulated")
    if kind == "void":
        # hook getNvidiaConfig: "empty devices means this is not a GPU container" -> runc behaviour
        result.notes.append("NVIDIA_VISIBLE_DEVICES void, empty or unset: no GPU, no driver (same as runc)")
        return
    privileged = "CAP_SYS_ADMIN" in ((spec.get("process") or {}).get("capabilities") or {}).get("bounding", [])
    if not privileged and not config.get("accept_envvar_unprivileged", True):
        # container_config.go getDevices: log.Printf("Ignoring devices specified in NVIDIA_VISIBLE_DEVICES ...")
        result.notes.append("unprivileged container and accept-nvidia-visible-devices-envvar-when-unprivileged "
                            "false: devices ignored")
        return
    cards = host.cards()
    try:
        selected = [] if kind == "none" else nvidia_select(tokens, cards)
    except LookupError as err:
        if resolved != "legacy":
            # NOT SOURCED: the jit-cdi (toolkit >= 1.18) error text for an unknown device.
            raise Refusal(f"{SIM_NOTE} nvidia-container-runtime {config['version']} (mode {resolved}): "
                          f"NVIDIA_VISIBLE_DEVICES names a GPU this host does not have ({err}); the real jit-cdi "
                          "error text is not modelled") from None
        # configure.c: warnx("device error: %s", err.msg) -> "nvidia-container-cli: device error: <dev>: ..."
        raise Refusal(_hook_failure(spec, f"{banner}\nnvidia-container-cli: device error: {err}")) from None
    disable = config.get("disable_require") or env.get("NVIDIA_DISABLE_REQUIRE", "").lower() in (
        "1", "t", "true")  # HasDisableRequire: strconv.ParseBool
    if resolved == "legacy" and not disable:
        requirements = [env[k] for k in sorted(env) if k.startswith("NVIDIA_REQUIRE_")
                        and not k.startswith("NVIDIA_REQUIRE_JETPACK")]
        if env.get("CUDA_VERSION") and not env.get("NVIDIA_REQUIRE_CUDA"):
            legacy_cuda = re.match(r"(\d+)\.(\d+)", env["CUDA_VERSION"])
            if legacy_cuda:
                requirements.append(f"cuda>={legacy_cuda.group(1)}.{legacy_cuda.group(2)}")
        facts = dict(config, cuda_version=config.get("cuda_version") or host.profile.get("tool_version", ""),
                     driver_version=config.get("driver_version") or host.profile.get("driver_version", ""))
        for device in selected or [None]:  # configure.c: per visible device, else once globally
            for requirement in requirements:
                failure = dsl_evaluate(requirement, facts, device)
                if failure:
                    raise Refusal(_hook_failure(spec, f"{banner}\nnvidia-container-cli: requirement error: "
                                                      f"{failure}"))
    elif not disable:
        result.notes.append(f"mode {resolved}: NVIDIA_REQUIRE_* checks are not simulated")
    # the hook mounts the selected GPUs and the driver's control nodes (nvc_info.c lookup_devices) into the
    # container; the sandbox expresses that as spec devices
    for card in selected:
        node, _ = host.node(f"/dev/nvidia{card['index']}")
        if node is not None:
            _add_device(spec, result, node)
    for path in NV_DRIVER_NODES:
        node, _ = host.node(path)
        if node is not None:
            _add_device(spec, result, node)
    result.notes.append("driver libraries and binaries are not mounted (a sandbox host has none)")


# --- ascend-docker-runtime ----------------------------------------------------------------------------------
# Sources: Ascend/mind-cluster component/ascend-docker-runtime (gitee, mirrored on github): runtime/process/
# process.go (commit 1db90bc: checkVisibleDevice, parseDevices, getDeviceListFromVisibleValue, parseAscendDevices,
# addDevice, addManagerDevice, addAscendDockerEnv, DoProcess), hook/process/process.go (commit 33575f2:
# DoPrestartHook, parseMounts, readMountConfig, parseRuntimeOptions); build/scripts/base.list (mind-cluster mirror
# xiaobingling93-pixel/Ascend-mind-cluster cb3cc9d); Ascend/ascend-docker-runtime v5.0.0-RC3.2 (github) runtime/
# main.go and hook/main.go for what main() does with an error (log.Fatal).
ASCEND_CONFIG_DIR = "/etc/ascend-docker-runtime.d"
ASCEND_BASE_LIST = ("/usr/local/Ascend/driver/lib64", "/usr/local/Ascend/driver/include", "/usr/local/dcmi",
                    "/usr/local/bin/npu-smi", "/var/queue_schedule")


def _go_errorf_sharp(text: str) -> str:
    """fmt's %#v of an error made by errors.New / fmt.Errorf without %w: &errors.errorString{s:"..."}."""
    return "&errors.errorString{s:" + json.dumps(text, ensure_ascii=False) + "}"


def _go_log_fatal(text: str, prefix: str = "") -> str:
    """Go log.Fatal with the standard flags: '<prefix>2006/01/02 15:04:05 <text>'."""
    return f"{prefix}{time.strftime('%Y/%m/%d %H:%M:%S')} {text}"


def ascend_parse(value: str) -> list[int]:
    """getDeviceListFromVisibleValue per comma item: 'a-b' ranges or single ids. Raises ValueError with the
    runtime's text. parseDevices then calls sort.Slice with `i < j` (indices, not values): for up to 12 ids that
    keeps the given order; removeDuplication drops only repeats next to each other."""
    devices: list[int] = []
    for raw in value.split(","):
        item = raw.strip()
        if "-" in item:
            borders = item.split("-")
            if len(borders) != 2:
                raise ValueError(f"invalid device range: {item}")
            left_text, right_text = borders[0].strip(), borders[1].strip()
            left = _atoi(left_text)
            if left is None or left < 0:
                raise ValueError(f"invalid left boarder range parameter: {left_text}")
            right = _atoi(right_text)
            if right is None or right > 128:
                raise ValueError(f"invalid right boarder range parameter: {right_text}")
            if left > right:
                raise ValueError(f"left boarder ({left}) should not be larger than the right one({right})")
            devices.extend(range(left, right + 1))
            continue
        number = _atoi(item)
        if number is None:
            raise ValueError(f"invalid single device parameter: {item}")
        devices.append(number)
    out: list[int] = []
    for device in devices:
        if not out or out[-1] != device:
            out.append(device)
    return out


def _atoi(text: str) -> int | None:
    """Go strconv.Atoi: optional sign, decimal digits only."""
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def ascend_parse_named(value: str, chip: str) -> list[int]:
    """parseAscendDevices: Ascend<chip>-<id>, one chip type, which must be the host's."""
    devices, chip_type = [], ""
    for item in value.split(","):
        match = re.fullmatch(r"Ascend(910|310B|310P|310)-(\d+)", item.strip())
        if not match:
            raise ValueError(f"invalid device format: {item}")
        chip_type = chip_type or match.group(1)
        if chip_type != match.group(1):
            raise ValueError(f"invalid device chip type: {item}")
        devices.append(int(match.group(2)))
    host_type = next((t for t in ("310B", "310P", "310", "910") if t in chip), "")  # GetDeviceTypeByChipName
    if chip_type != host_type:
        raise ValueError(f"chip type not match really: {chip_type}")
    out: list[int] = []
    for device in devices:
        if not out or out[-1] != device:
            out.append(device)
    return out


def ascend(spec: dict, host: Host, config: dict, result: Result, bundle: str = "") -> None:
    env = _env(spec)
    fail = f"failed to modify spec file {bundle.rstrip('/')}/config.json: "
    docker_note = (" (on a real host this text goes only to the runtime's stderr: it does not write runc's log, "
                   "so docker reports 'unable to retrieve OCI runtime error ... did not terminate successfully: "
                   "exit status 1')")

    def refuse(message: str) -> Refusal:
        return Refusal(_go_log_fatal(fail + message), docker=fail + message + docker_note)

    value = ""
    for entry in reversed(env):  # getValueByDeviceKey: the last ASCEND_VISIBLE_DEVICES entry
        name, _, found = entry.partition("=")
        if name == "ASCEND_VISIBLE_DEVICES":
            value = found
            break
    devices: list[int] = []
    if value not in ("", "void"):
        chip = host.profile.get("model", "")
        try:
            devices = ascend_parse_named(value, chip) if "Ascend" in value else ascend_parse(value)
        except ValueError as err:
            kind = "ascend device" if "Ascend" in value else "device"
            raise refuse(f"failed to check ASCEND_VISIBLE_DEVICES parameter, err: failed to parse {kind} : "
                         f"{err}") from None
    else:
        result.notes.append("ASCEND_VISIBLE_DEVICES empty, void or unset: no NPU is mounted")
    if devices:
        options = _value(env, "ASCEND_RUNTIME_OPTIONS")
        if _value(env, "ASCEND_VNPU_SPECS"):
            raise Refusal(f"{SIM_NOTE} ascend-docker-runtime: vNPU splitting (ASCEND_VNPU_SPECS) is not simulated")
        virtual = "VIRTUAL" in options
        name = "vdavinci" if virtual else "davinci"
        for device in devices:  # addDevice: /dev/<name><id>, vdavinci<id> shows as /dev/davinci<id>
            path = f"/dev/{name}{device}"
            node, why = host.node(path)
            if node is None:
                raise refuse(f"failed to add device to env: failed to add davinci device to spec: failed to get "
                             f"{path} info : {why}")
            _add_device(spec, result, node, f"/dev/davinci{device}")
        # addManagerDevice for a 910/310/310P chip (310B has its own list, not simulated): dvpp_cmdlist when
        # present, davinci_manager, and devmm_svm + hisi_hdc unless the product is an Atlas 200 model
        node, _ = host.node("/dev/dvpp_cmdlist")
        if node is not None:
            _add_device(spec, result, node)
        node, why = host.node("/dev/davinci_manager")
        if node is None:
            raise refuse(f"failed to add device to env: failed to add Manager device to spec: add davinci_manager "
                         f"to spec error: failed to get /dev/davinci_manager info : {why}")
        _add_device(spec, result, node)
        if config.get("product") not in ("Atlas 200I SoC A1", "Atlas 200 Model 3000"):
            for path in ("/dev/devmm_svm", "/dev/hisi_hdc"):
                node, why = host.node(path)
                if node is None:
                    raise refuse(f"failed to add device to env: failed to add Manager device to spec: add common "
                                 f"manage device error: failed to add common manage device to spec : failed to "
                                 f"get {path} info : {why}")
                _add_device(spec, result, node)
        _ascend_hook(spec, host, result, env)
    # addAscendDockerEnv: every container the runtime creates gets ASCEND_DOCKER_RUNTIME=True
    if (spec.get("process") or {}).get("env") is not None:
        _append_env(spec, result, "ASCEND_DOCKER_RUNTIME=True")


def _ascend_hook(spec: dict, host: Host, result: Result, env: list[str]) -> None:
    """What the prestart hook (ascend-docker-hook -> ascend-docker-cli) does, applied at create: mount the files
    and directories of the listed mount configs read-only, unless ASCEND_RUNTIME_OPTIONS has NODRV."""
    # hook getValueByKey: the FIRST entry of each variable
    if not _value(env, "ASCEND_VISIBLE_DEVICES"):
        return

    def hook_refusal(message: str) -> Refusal:
        # hook/main.go (v5.0.0-RC3.2): log.SetPrefix("ascend-docker-hook");
        # log.Fatal(fmt.Errorf("failed in runtime.doProcess: %#v", err)); runc reports the hook's exit status 1.
        stderr = _go_log_fatal("failed in runtime.doProcess: " + _go_errorf_sharp(message), "ascend-docker-hook")
        return Refusal(_hook_failure(spec, stderr))

    mounts_value = _value(env, "ASCEND_RUNTIME_MOUNTS")
    configs = ["base"] if mounts_value == "" or len(mounts_value) > 128 else [
        m.strip().lower() for m in mounts_value.split(",")]
    if host.kind(ASCEND_CONFIG_DIR) != "dir":
        # NOT SOURCED exactly: the inner error wording of os.Stat on a missing directory is Go's
        inner = (f"cannot stat configuration directory {ASCEND_CONFIG_DIR} : stat {ASCEND_CONFIG_DIR}: no such "
                 "file or directory")
        raise hook_refusal("failed to read configuration from config directory: " + _go_errorf_sharp(inner))
    files, dirs = [], []
    for name in configs:
        list_path = f"{ASCEND_CONFIG_DIR}/{name}.list"
        if host.kind(list_path) != "file":
            # NOT SOURCED exactly: mindxcheckutils.RealFileChecker's message for a missing list file is not
            # published with the hook; the sandbox states the rule.
            raise hook_refusal(f"failed to read configuration from config directory: failed to process config "
                               f"{name}: {SIM_NOTE}: mount list {list_path} does not exist")
        entries = host.read_text(list_path).splitlines()
        if len(entries) > 128:
            raise hook_refusal(f"failed to read configuration from config directory: failed to process config "
                               f"{name}: mount list too long")
        for entry in entries:
            path = os.path.normpath(entry.strip()) if entry.strip() else ""
            if not path.startswith("/"):
                continue
            kind = host.kind(path)  # readMountConfig: os.Stat failures are skipped
            if kind == "file":
                files.append(path)
            elif kind == "dir":
                dirs.append(path)
    options = _value(env, "ASCEND_RUNTIME_OPTIONS")
    if len(options) > 128:
        raise hook_refusal("failed to parse runtime options: " + _go_errorf_sharp(
            "invalid runtime option, the length exceeds 128 characters"))
    parsed = []
    for option in options.split(",") if options else []:
        if option.strip() not in ("NODRV", "VIRTUAL"):
            raise hook_refusal("failed to parse runtime options: " + _go_errorf_sharp(
                "invalid runtime option of invalid input value"))
        parsed.append(option.strip())
    allow_link = _value(env, "ASCEND_ALLOW_LINK")
    if allow_link not in ("", "True", "False"):
        raise hook_refusal("failed to parse soft link mode: " + _go_errorf_sharp("invalid soft link option"))
    if "NODRV" in parsed:  # hiascend "Usage on the Docker Client", example 2: devices only, no driver files
        result.notes.append("ASCEND_RUNTIME_OPTIONS=NODRV: no driver files mounted")
        return
    for path in files + dirs:
        _add_bind(spec, result, path)


# --- entry point --------------------------------------------------------------------------------------------
APPLY = {HABANA: habana, NVIDIA: nvidia}


def apply(tool: str, spec: dict, host: Host, config: dict, bundle: str = "") -> Result:
    """The runtime's `create` as a pure function of the spec: returns the edited copy, or raises Refusal."""
    result = Result(copy.deepcopy(spec))
    if tool == ASCEND:
        ascend(result.spec, host, config, result, bundle)
    else:
        APPLY[tool](result.spec, host, config, result)
    return result


GLOBAL_VALUE_OPTIONS = ("--root", "--log", "--log-format", "--criu", "--rootless")


def parse_args(argv: list[str]) -> tuple[str, dict, list[str]]:
    """(command, global options, the command's own arguments) of an OCI runtime command line."""
    options: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, sep, value = arg.partition("=")
        if arg in GLOBAL_VALUE_OPTIONS and i + 1 < len(argv):
            options[arg] = argv[i + 1]
            i += 2
            continue
        if sep and name in GLOBAL_VALUE_OPTIONS:
            options[name] = value
        elif arg.startswith("-"):
            options[arg] = True
        else:
            return arg, options, argv[i + 1:]
        i += 1
    return "", options, []


def bundle_dir(args: list[str]) -> str:
    """habana flags.go parseBundle: --bundle/-b DIR or --bundle=DIR; the working directory otherwise."""
    for i, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag.lstrip("-") in ("b", "bundle") and flag.startswith("-"):
            if sep:
                return value
            if i + 1 < len(args):
                return args[i + 1]
    return os.getcwd()


def _log(line: str) -> None:
    try:
        os.makedirs(os.path.dirname(SIM_LOG), exist_ok=True)
        with open(SIM_LOG, "a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
    except OSError:
        pass


def _runc_log(options: dict, message: str) -> None:
    """Append the error to runc's --log file in its format: containerd reads the last level=error entry of it
    into 'OCI runtime create failed: <msg>'."""
    path = options.get("--log")
    if not path:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if options.get("--log-format") == "json":
        line = json.dumps({"level": "error", "msg": message, "time": stamp})
    else:
        line = f"time={json.dumps(stamp)} level=error msg={json.dumps(message)}"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass


def main(tool: str, argv: list[str], host: Host | None = None, execvp=os.execvp) -> int:
    command, options, rest = parse_args(argv)
    wants_version = "--version" in options or "-v" in options
    if command != "create" and not wants_version:  # start, state, kill, delete, ...: runc, unchanged
        execvp("runc", ["runc", *argv])
        return 0
    profile = simlib.load_profile() if host is None else host.profile
    host = host or Host(profile, simlib.load_faults())
    config = load_config(tool, profile)
    label = f"{SIM_NOTE} {tool} {config['version']}"
    if wants_version:
        if tool == NVIDIA:  # internal/runtime/runtime.go: "%v version %v\n" then runc's own version
            print(f"NVIDIA Container Runtime version {config['version']}")
        print(f"{label} (not the vendor's runtime)\n")
        sys.stdout.flush()
    else:
        bundle = bundle_dir(rest)
        path = os.path.join(bundle, "config.json")
        try:
            with open(path, encoding="utf-8") as handle:
                spec = json.load(handle)
            result = apply(tool, spec, host, config, bundle)
        except Refusal as refusal:
            sys.stderr.write(f"{refusal.stderr}\n({label}: container refused)\n")
            _runc_log(options, f"{refusal.docker} ({label})")
            _log(f"{tool} create {bundle}: REFUSED: {refusal.docker}")
            return 1
        except (OSError, ValueError) as err:
            sys.stderr.write(f"{label}: cannot read {path}: {err}\n")
            _runc_log(options, f"{label}: cannot read {path}: {err}")
            return 1
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(result.spec, handle)
        _log(f"{tool} create {bundle}: devices {result.devices} mounts {result.mounts} env {result.env} "
             f"notes {result.notes}")
    execvp("runc", ["runc", *argv])
    return 0  # only reached when execvp is replaced (tests)
