"""Validation of inferfleet's inventory variables: one source of truth for the CLI, the API and the Ansible
preflight (plugins/action/inferfleet_validate.py imports this module).

Each problem names the host, the variable and the fix, so that bad input is refused before any host changes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from inferfleet.tuning import GOVERNORS, IDLE_STATE_NAME

PLATFORMS = ("gaudi", "ascend", "nvidia", "cpu")
ACCELERATOR_KEYS = {"model": str, "count": int, "memory_gib": (int, float)}
PLATFORM_GROUPS = set(PLATFORMS)
URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?$")


@dataclass(frozen=True)
class Problem:
    host: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"host {self.host}: {self.field}: {self.message} (fix: {self.fix})"

    def to_dict(self) -> dict:
        return asdict(self)


def _type_name(value) -> str:
    return type(value).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_host(host: str, host_vars: dict, groups: list[str] | tuple[str, ...] = ()) -> list[Problem]:
    """Problems in one host's inferfleet variables; an empty list means the host may proceed."""
    problems: list[Problem] = []

    def add(field: str, message: str, fix: str) -> None:
        problems.append(Problem(host, field, message, fix))

    platform = host_vars.get("inferfleet_platform")
    if platform is None:
        add("inferfleet_platform", "is not set",
            f"set inferfleet_platform to one of {', '.join(PLATFORMS)} in host_vars or group_vars")
    elif platform not in PLATFORMS:
        add("inferfleet_platform", f"{platform!r} is not a supported platform",
            f"use one of {', '.join(PLATFORMS)}")
    else:
        platform_groups = sorted(PLATFORM_GROUPS & set(groups))
        wrong = [g for g in platform_groups if g != platform]
        if wrong:
            add("inferfleet_platform", f"is {platform!r} but the host is in inventory group {wrong[0]!r}",
                f"move the host to group {platform!r} or set inferfleet_platform: {wrong[0]}")

    accel = host_vars.get("inferfleet_accelerator")
    needs_accel = platform in PLATFORMS and platform != "cpu"
    if accel is None:
        if needs_accel:
            add("inferfleet_accelerator", "is not set",
                "describe the cards, e.g. inferfleet_accelerator: {model: HL-225, count: 8, memory_gib: 96}")
    elif not isinstance(accel, dict):
        add("inferfleet_accelerator", f"must be a mapping, got {_type_name(accel)}",
            "write it as {model: ..., count: ..., memory_gib: ...}")
    else:
        for key in sorted(set(accel) - set(ACCELERATOR_KEYS)):
            add(f"inferfleet_accelerator.{key}", "is not a known key",
                f"remove it or correct the spelling (known keys: {', '.join(ACCELERATOR_KEYS)})")
        if needs_accel:
            for key in ACCELERATOR_KEYS:
                if key not in accel:
                    add(f"inferfleet_accelerator.{key}", "is missing", f"add inferfleet_accelerator.{key}")
        model = accel.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            add("inferfleet_accelerator.model", "must be a non-empty string", "give the card model, e.g. HL-225")
        count = accel.get("count")
        if count is not None and (not _is_int(count) or count < (1 if needs_accel else 0)):
            add("inferfleet_accelerator.count", f"must be a whole number >= 1, got {count!r}",
                "give the number of cards in the host, e.g. 8")
        memory = accel.get("memory_gib")
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float))
                                   or memory <= 0):
            add("inferfleet_accelerator.memory_gib", f"must be a positive number, got {memory!r}",
                "give the memory of one card in GiB, e.g. 96")

    for field in ("inferfleet_registry_mirror", "inferfleet_docker_hub_mirror"):
        url = host_vars.get(field)
        if url not in (None, "") and (not isinstance(url, str) or not URL.match(url)):
            add(field, f"{url!r} is not an http(s) URL", "write it as http://HOST:PORT or https://HOST")
    _string_list(host_vars, add, "inferfleet_insecure_registries", HOST_PORT, "is not HOST[:PORT]",
                 "write it as a YAML list of HOST:PORT entries", "list registries as HOST:PORT without a scheme")
    _validate_tuning(host_vars, add)
    _validate_docker(host_vars, add)
    return problems


def _whole_number(value) -> int | None:
    """An int from an int or a string of digits (`-e key=15000` arrives as a string); None otherwise."""
    if _is_int(value):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        return int(value)
    return None


def _choice(host_vars: dict, add, field: str, choices, fix_example: str) -> None:
    value = host_vars.get(field)
    if value is not None and value not in choices:
        add(field, f"{value!r} is not one of {', '.join(map(str, choices))}", f"set {field}: {fix_example}")


def _string_list(host_vars: dict, add, field: str, pattern, item_problem: str, list_fix: str, item_fix: str) -> None:
    """A list variable whose items must be strings matching `pattern`."""
    items = host_vars.get(field)
    if items is None:
        return
    if not isinstance(items, list):
        add(field, f"must be a list, got {_type_name(items)}", list_fix)
        return
    for item in items:
        if not isinstance(item, str) or not pattern.match(item):
            add(field, f"{item!r} {item_problem}", item_fix)


def _validate_tuning(host_vars: dict, add) -> None:
    """Variables of the tune stage (role host_tuning)."""
    for field in ("host_tuning_hugepages", "host_tuning_intel_idle_max_cstate", "host_tuning_reboot_timeout"):
        value = host_vars.get(field)
        if value is None:
            continue
        number = _whole_number(value)
        if number is None or number < 0:
            add(field, f"must be a whole number >= 0, got {value!r}",
                f"write a plain number, e.g. {field}: 15000" if field == "host_tuning_hugepages"
                else f"write a plain number, e.g. {field}: 0")
    _choice(host_vars, add, "host_tuning_governor", GOVERNORS, "performance")
    _choice(host_vars, add, "host_tuning_reboot", ("never", "if_needed"), "never")
    _string_list(host_vars, add, "host_tuning_disable_idle_states", IDLE_STATE_NAME, "is not an idle state name",
                 "write it as a YAML list, e.g. [C1E, C6]",
                 "use names as in /sys/devices/system/cpu/cpu0/cpuidle/state*/name, e.g. C1E, C6")
    args = host_vars.get("host_tuning_kernel_cmdline")
    if args is not None:
        if not isinstance(args, dict):
            add("host_tuning_kernel_cmdline", f"must be a mapping, got {_type_name(args)}",
                "write it as key: value, e.g. {intel_iommu: 'on', iommu: pt}")
        else:
            for key in args:
                if not isinstance(key, str) or not re.fullmatch(r"[^\s=\"]+", key):
                    add("host_tuning_kernel_cmdline", f"key {key!r} is not a kernel argument name",
                        "use the part before '=' as the key and put the value on the right")


def _validate_docker(host_vars: dict, add) -> None:
    """Variables of the docker stage (roles docker_engine and accel_runtime)."""
    _choice(host_vars, add, "docker_engine_source", ("upstream", "distro"), "distro")
    _choice(host_vars, add, "accel_runtime_ascend_mode", ("devices", "runtime"), "devices")
    options = host_vars.get("docker_engine_daemon_options")
    if options is not None and not isinstance(options, dict):
        add("docker_engine_daemon_options", f"must be a mapping, got {_type_name(options)}",
            'write daemon.json keys as a mapping, e.g. {"log-driver": "json-file"}')
    users = host_vars.get("docker_engine_users")
    if users is not None and (not isinstance(users, list) or not all(isinstance(u, str) and u for u in users)):
        add("docker_engine_users", f"must be a list of user names, got {users!r}", "write e.g. [alice, bob]")


def validate_inventory(hosts: dict[str, dict], groups_of: dict[str, list[str]] | None = None) -> list[Problem]:
    problems: list[Problem] = []
    for host in sorted(hosts):
        problems.extend(validate_host(host, hosts[host], (groups_of or {}).get(host, ())))
    return problems
