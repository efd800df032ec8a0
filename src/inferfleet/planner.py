"""The deployment planner: from a host's inventory variables (and, when known, its discovered cards) to the exact
containers the serve stage will run, or the reasons it cannot.

One source of truth: `inferfleet plan` prints it, preflight saves it in the run directory, and the later stages
apply that saved plan (plugins/action/inferfleet_plan.py). Offline and pure: no host is contacted.

The steps, each a function of its own: settings (the schema) -> parse each service -> allocate cards ->
assign ports -> size memory -> emit containers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from . import schema
from .schema import POOLING_TASKS, Problem, Service, shown

GIB = 1024**3
MIB = 1024**2
DTYPE_BYTES = {"float32": 4, "float": 4, "fp32": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp16": 2, "bf16": 2,
               "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "int8": 1}
PLAN_FORMAT = 1


@cache
def role_data(role: str, name: str) -> dict:
    """A data file of a role (roles/<role>/files/<name>): presets and defaults live beside the role using them."""
    from .paths import project_dir

    return yaml.safe_load((project_dir() / "roles" / role / "files" / name).read_text())


def presets() -> dict:
    return role_data("vllm_service", "presets.yml")


def serving_default(key: str, platform: str | None = None):
    value = role_data("vllm_service", "serving_defaults.yml")[key]
    return value.get(platform, value["default"]) if isinstance(value, dict) else value


def container_access() -> dict:
    return role_data("accel_runtime", "container_access.yml")


@dataclass
class HostPlan:
    host: str
    platform: str
    accelerator: dict
    instances: list[dict] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # hashes of what the plan was computed from

    def to_dict(self) -> dict:
        return {"platform": self.platform, "accelerator": self.accelerator, "instances": self.instances,
                "inputs": self.inputs}


@dataclass
class Plan:
    hosts: dict[str, HostPlan] = field(default_factory=dict)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        document = fleet_document({name: plan.to_dict() for name, plan in self.hosts.items()})
        return {**document, "errors": [e.to_dict() for e in self.errors],
                "warnings": [w.to_dict() for w in self.warnings]}


def fleet_document(host_plans: dict[str, dict]) -> dict:
    """A fleet's plan as saved (`inferfleet plan --save`, preflight's <run dir>/plan.json): the hosts' plans and
    the hash of all of them."""
    hosts = dict(sorted(host_plans.items()))
    # each instance's config_hash covers its container and readiness settings: hashing those is hashing the plan
    summary = {name: [plan["platform"], plan["accelerator"], plan.get("inputs"),
                      [inst["config_hash"] for inst in plan["instances"]]] for name, plan in hosts.items()}
    return {"format": PLAN_FORMAT, "hash": digest(summary), "hosts": hosts}


def digest(value, ordered: bool = False) -> str:
    """sha256 of a value's canonical JSON. ordered: the value was built in a fixed order (not read from a file),
    so its keys need no sorting."""
    return hashlib.sha256(json.dumps(value, sort_keys=not ordered, default=str).encode()).hexdigest()


# --- model arithmetic -------------------------------------------------------------------------------------------
def text_config(config: dict) -> dict:
    """Multimodal configs nest the language model's settings under text_config / llm_config."""
    for key in ("text_config", "llm_config", "language_config"):
        if isinstance(config.get(key), dict):
            return {**config, **config[key]}
    return config


def head_dim(config: dict) -> int:
    config = text_config(config)
    if config.get("head_dim"):
        return int(config["head_dim"])
    return int(config["hidden_size"]) // int(config["num_attention_heads"])


def kv_heads(config: dict) -> int:
    config = text_config(config)
    return int(config.get("num_key_value_heads") or config["num_attention_heads"])


def model_dtype(config: dict) -> str:
    return str(text_config(config).get("torch_dtype") or text_config(config).get("dtype") or "bfloat16")


def has_attention_shape(config: dict) -> bool:
    """The config names what the KV and TP arithmetic needs: layers, heads and a head width."""
    config = text_config(config)
    return bool(config.get("num_hidden_layers") and config.get("num_attention_heads")
                and (config.get("head_dim") or config.get("hidden_size")))


def kv_dtype_bytes(kv_cache_dtype: str | None, dtype: str | None, config: dict) -> int:
    if kv_cache_dtype and kv_cache_dtype != "auto":
        return DTYPE_BYTES.get(kv_cache_dtype, 2)
    if dtype and dtype != "auto":
        return DTYPE_BYTES.get(dtype, 2)
    return DTYPE_BYTES.get(model_dtype(config), 2)


def kv_bytes_per_token(config: dict, tp: int, kv_cache_dtype: str | None = None, dtype: str | None = None) -> int:
    """KV-cache bytes one token occupies on each device of an instance.

    2 (K and V) x layers x KV heads on this device x head_dim x bytes per element. Seed 001's formula is the case
    num_key_value_heads == num_attention_heads and head_dim == hidden_size / num_hidden_layers. When TP exceeds
    the KV heads, vLLM replicates them, so each device holds at least one."""
    config = text_config(config)
    heads_here = max(1, kv_heads(config) // tp)
    return 2 * int(config["num_hidden_layers"]) * heads_here * head_dim(config) * kv_dtype_bytes(
        kv_cache_dtype, dtype, config)


def estimate_parameters(config: dict) -> int | None:
    """Parameters of a decoder-only transformer from its config (embeddings, attention with GQA, gated MLP)."""
    config = text_config(config)
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        vocab = int(config["vocab_size"])
        intermediate = int(config["intermediate_size"])
        kv_dim = kv_heads(config) * head_dim(config)
        q_dim = int(config["num_attention_heads"]) * head_dim(config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden
    mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return embeddings + layers * (attention + mlp + 2 * hidden)


def weights_bytes(weights_gib, dtype: str | None, config: dict | None,
                  model_dir: Path | None) -> tuple[int | None, str]:
    """Bytes of the weights and where the number comes from."""
    if weights_gib is not None:
        return int(float(weights_gib) * GIB), "weights_gib"
    try:
        if model_dir is not None and model_dir.is_dir():
            index = model_dir / "model.safetensors.index.json"
            if index.exists():
                total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
                if isinstance(total, int) and total > 0:
                    return total, "safetensors index"
            sizes = [p.stat().st_size for p in model_dir.glob("*.safetensors")]
            if sizes:
                return sum(sizes), "safetensors files"
    except (OSError, ValueError, AttributeError):
        pass  # a model directory the controller cannot read tells nothing: estimate from the config
    if config:
        params = estimate_parameters(config)
        if params:
            dtype = dtype if dtype not in (None, "auto") else model_dtype(config)
            return params * DTYPE_BYTES.get(str(dtype), 2), "parameter count x dtype"
    return None, ""


def default_task(config: dict | None) -> str | None:
    architectures = (config or {}).get("architectures") or []
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "rerank"
        if arch.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")):
            return "generate"
        if arch.endswith("Model"):
            return "embed"
    return None


def max_model_len_limit(config: dict) -> int | None:
    config = text_config(config)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if config.get(key):
            limit = int(config[key])
            scaling = config.get("rope_scaling") or {}
            if isinstance(scaling, dict) and scaling.get("factor") and scaling.get("type", scaling.get(
                    "rope_type")) in ("yarn", "dynamic", "linear"):
                limit = int(limit * float(scaling["factor"]))
            return limit
    return None


# --- env --------------------------------------------------------------------------------------------------------
def hpu_buckets(stack: str, max_model_len: int, max_num_seqs: int, max_num_batched_tokens: int,
                block_size: int = 128) -> dict[str, str]:
    """Bucket ranges covering the service's limits, as seed 004's start script derives them from -b/-l/-t."""
    prompt_bs_max = max(1, min(max_num_seqs, max_num_batched_tokens // max(1, min(max_model_len, 1024))))
    seq_step = 128 if max_model_len <= 4096 else 256 if max_model_len <= 16384 else 512
    decode_step = 1 if max_num_seqs <= 8 else min(32, max_num_seqs)
    blocks = math.ceil(max_model_len / block_size) * max_num_seqs
    values = {
        "PROMPT_BS": (1, 1 if prompt_bs_max <= 8 else 8, prompt_bs_max),
        "PROMPT_SEQ": (min(seq_step, max_model_len), seq_step, max_model_len),
        "DECODE_BS": (1, decode_step, max_num_seqs),
        "DECODE_BLOCK": (block_size, block_size, math.ceil(blocks / block_size) * block_size),
    }
    names = {"PROMPT_SEQ": "PROMPT_QUERY"} if stack == "vllm-gaudi" else {}
    env = {}
    for key, (low, step, high) in values.items():
        name = names.get(key, key)
        env[f"VLLM_{name}_BUCKET_MIN"] = str(low)
        env[f"VLLM_{name}_BUCKET_STEP"] = str(step)
        env[f"VLLM_{name}_BUCKET_MAX"] = str(high)
    return env


# --- the planner ------------------------------------------------------------------------------------------------
@dataclass
class HostInput:
    """What the planner needs about one host."""
    name: str
    vars: dict
    groups: tuple = ()
    discovered: dict | None = None  # ansible_facts.inferfleet_accel from preflight, when known
    base_dir: Path | None = None  # where relative model_config / env_file paths are looked up


class Findings:
    """The errors and warnings of one host, each naming its field and the fix."""

    def __init__(self, host: str):
        self.host, self.errors, self.warnings = host, [], []

    def error(self, field_path: str, message: str, fix: str) -> None:
        self.errors.append(Problem(self.host, field_path, message, fix))

    def warn(self, field_path: str, message: str, fix: str) -> None:
        self.warnings.append(Problem(self.host, field_path, message, fix))


@dataclass
class Cards:
    """The host's cards: discovered by preflight when known, else as the inventory declares them."""
    platform: str
    count: int
    memory_bytes: int
    model: str
    devices: dict  # index -> discovered device (module_id, held, processes, numa_node)
    discovered: bool
    simulated: bool

    def held(self, index: int) -> bool:
        return bool(self.devices.get(index, {}).get("held"))

    def holders(self, index: int) -> str:
        return ", ".join(f"pid {p.get('pid')}" + (f" (container {p['container']})" if p.get("container") else "")
                         for p in self.devices.get(index, {}).get("processes", [])) or "another process"


@dataclass
class Draft:
    """A service on its way through the planner: the user's spec (untouched) and what the planner derived."""
    spec: Service
    label: str  # how problems name it: inferfleet_services[<label>]
    models: list[str]
    config: dict | None
    task: str
    max_model_len: int
    max_num_seqs: int
    max_batched: int
    image: str = ""
    env: dict = field(default_factory=dict)
    weights: int | None = None
    weights_source: str = ""
    groups: list[list[int]] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)  # {group, replica, model, port, fraction}

    def at(self, key: str) -> str:
        return f"inferfleet_services[{self.label}].{key}"


_FILE_CACHE: dict[tuple[str, int], object] = {}  # one read per file for a fleet sharing model configs
_CHECKED_CONFIGS: set[int] = set()  # ids of _FILE_CACHE entries the schema accepted (kept alive by the cache)


def load_mapping(value, base_dir: Path | None, what: str) -> tuple[dict | None, str, str]:
    """A mapping given inline or as a JSON/YAML file on the controller: (mapping, source, problem)."""
    if isinstance(value, dict):
        return value, "the inline mapping", ""
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        if path.is_dir():
            path = path / "config.json"
        key = (str(path), path.stat().st_mtime_ns)
        if key not in _FILE_CACHE:
            _FILE_CACHE[key] = yaml.safe_load(path.read_text())  # JSON is YAML
        loaded = _FILE_CACHE[key]
    except FileNotFoundError:
        return None, str(path), f"{what} {path} does not exist on the controller"
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: a NUL in the path
        return None, str(path), f"{what} {path} cannot be read ({err})"
    except yaml.YAMLError as err:
        return None, str(path), f"{what} {path} is not valid JSON/YAML ({str(err).splitlines()[0]})"
    if not isinstance(loaded, dict):
        return None, str(path), f"{what} {path} must hold a mapping, got {shown(loaded)}"
    return loaded, str(path), ""


def plan_hosts(hosts: list[HostInput]) -> Plan:
    """The plan of every host; never raises on bad input: each problem is an error naming host and field."""
    plan = Plan()
    for host in hosts:
        host_plan, findings = plan_host(host)
        plan.hosts[host.name] = host_plan
        plan.errors += findings.errors
        plan.warnings += findings.warnings
    return plan


def plan_host(host: HostInput) -> tuple[HostPlan, Findings]:
    findings = Findings(host.name)
    hv = host.vars
    problems = schema.validate_settings(host.name, hv, host.groups)
    platform = hv.get("inferfleet_platform") if hv.get("inferfleet_platform") in schema.PLATFORMS else "cpu"
    if problems:
        findings.errors += problems
        return HostPlan(host.name, platform, {}), findings
    cards = host_cards(platform, hv.get("inferfleet_accelerator") or {}, host.discovered,
                       bool(hv.get("inferfleet_simulated")))
    host_plan = HostPlan(host.name, platform, {
        "model": cards.model, "count": cards.count, "memory_gib": round(cards.memory_bytes / GIB, 1),
        "discovered": cards.discovered, "simulated": cards.simulated})
    services = hv.get("inferfleet_services") or [] if _serving(hv) else []
    if not isinstance(services, list):
        findings.error("inferfleet_services", f"must be a list of service specs, got {shown(services)}",
                       "write inferfleet_services as a YAML list: - {name: ..., model: ..., port: ...}")
        return host_plan, findings
    drafts = [d for d in (parse_service(host, position, raw, platform, findings)
                          for position, raw in enumerate(services)) if d is not None]
    unique_names(drafts, findings)
    allocate_cards(drafts, cards, findings)
    assign_ports(drafts, findings)
    size_memory(drafts, findings)
    if not findings.errors:
        host_plan.instances = emit_instances(drafts, host, cards, findings)
    host_plan.inputs = plan_inputs(host, drafts)
    return host_plan, findings


def _serving(hv: dict) -> bool:
    return hv.get("inferfleet_serving", True) not in (False, "false", "False", "no")


def host_cards(platform: str, accel: dict, discovered: dict | None, simulated: bool) -> Cards:
    discovered = discovered or {}
    count = int(discovered.get("count") or accel.get("count") or 0) if platform != "cpu" else 0
    if discovered.get("memory_total_mib"):
        memory = int(discovered["memory_total_mib"]) * MIB
    else:
        memory = int(float(accel.get("memory_gib") or 0) * GIB)
    return Cards(platform, count, memory, discovered.get("model") or accel.get("model", ""),
                 {d["index"]: d for d in discovered.get("devices", [])}, bool(discovered),
                 bool(discovered.get("simulated") or simulated))


def parse_service(host: HostInput, position: int, raw, platform: str, findings: Findings) -> Draft | None:
    """Check one spec against the schema and the model config, and derive its task and limits."""
    spec, label, problems = schema.parse_service(host.name, position, raw)
    if problems:
        findings.errors += problems
        return None
    at = f"inferfleet_services[{label}]"
    models = list(spec.models) if spec.models is not None else [spec.model]
    config = None
    if spec.config_source is not None:
        loaded, source, problem = load_mapping(spec.config_source, host.base_dir, "model_config")
        if problem:
            findings.error(f"{at}.model_config", problem,
                           "give the model's config.json as a path relative to the inventory, or the mapping")
            return None
        if id(loaded) not in _CHECKED_CONFIGS:
            config, problems = schema.parse_model_config(host.name, label, source, loaded)
            if problems:
                findings.errors += problems
                return None
            if not isinstance(spec.config_source, dict):  # a file's mapping, which _FILE_CACHE keeps
                _CHECKED_CONFIGS.add(id(loaded))
        config = loaded
    elif (Path(models[0]) / "config.json").is_file():
        loaded, source, _ = load_mapping(models[0], None, "model_config")
        config = schema.parse_model_config(host.name, label, source, loaded)[0]
    task = spec.task or default_task(config)
    if task is None:
        findings.error(f"{at}.task", "cannot be derived without model_config",
                       "set task: generate, embed or rerank, or give model_config")
        return None
    if spec.models is not None and task not in POOLING_TASKS:
        findings.error(f"{at}.models", f"several models share cards only in embed/rerank services, got task {task}",
                       "give one model per generate service")
        return None
    max_model_len = spec.max_model_len or (max_model_len_limit(config) if config else None) \
        or serving_default("max_model_len")
    max_batched = spec.max_num_batched_tokens or max(
        max_model_len, serving_default("min_batched_tokens_generate") if task == "generate" else 0)
    draft = Draft(spec, label, models, config, task, max_model_len,
                  spec.max_num_seqs or serving_default("max_num_seqs", platform), max_batched)
    check_model_limits(draft, platform, findings)
    return draft


def check_model_limits(draft: Draft, platform: str, findings: Findings) -> None:
    spec, config, tp = draft.spec, draft.config, draft.spec.tensor_parallel_size
    if not config:
        findings.warn(draft.at("model_config"), "no model config: TP, max_model_len and memory are not checked",
                      "give model_config (a config.json path on the controller or the mapping)")
        return
    if not has_attention_shape(config) and draft.task == "generate":
        findings.warn(draft.at("model_config"), "names no num_hidden_layers, num_attention_heads and hidden_size "
                                                "(or head_dim): TP and the KV cache are not checked",
                      "give the model's whole config.json")
    heads = int(text_config(config).get("num_attention_heads") or 0)
    if heads and heads % tp:
        findings.error(draft.at("tensor_parallel_size"), f"{tp} does not divide the model's {heads} attention heads",
                       f"use a divisor of {heads}: {', '.join(str(d) for d in range(1, heads + 1) if heads % d == 0)}")
    kvh = kv_heads(config) if heads else 0
    if platform == "gaudi" and kvh and tp > kvh:
        findings.error(draft.at("tensor_parallel_size"),
                       f"{tp} exceeds the model's num_key_value_heads {kvh}; Gaudi does not replicate KV heads",
                       f"use tensor_parallel_size <= {kvh}")
    limit = max_model_len_limit(config)
    if limit and spec.max_model_len and spec.max_model_len > limit:
        findings.error(draft.at("max_model_len"), f"{spec.max_model_len} exceeds the model's limit {limit}",
                       f"set max_model_len <= {limit}")


def unique_names(drafts: list[Draft], findings: Findings) -> None:
    seen: set[str] = set()
    for draft in list(drafts):
        if draft.spec.name in seen:
            findings.error(draft.at("name"), f"is used by another service on this host, got {draft.spec.name!r}",
                           "give every service of a host its own name")
            drafts.remove(draft)
        seen.add(draft.spec.name)


def allocate_cards(drafts: list[Draft], cards: Cards, findings: Findings) -> None:
    """Named cards first, then device_count services take free cards no process holds; TP groups; sharing."""
    reserved = {d for draft in drafts for d in (draft.spec.devices or [])}
    users: dict[int, list[Draft]] = {}
    for draft in list(drafts):
        spec = draft.spec
        if cards.platform == "cpu":
            if spec.devices is not None or spec.device_count is not None:
                findings.error(draft.at("devices"), "a cpu host has no cards to assign",
                               "remove devices and device_count from the service")
                drafts.remove(draft)
            else:
                draft.groups = [[]]
            continue
        devices = _choose_cards(draft, cards, reserved | set(users), findings)
        if devices is None:
            drafts.remove(draft)
            continue
        tp = spec.tensor_parallel_size
        if len(devices) % tp:
            findings.error(draft.at("tensor_parallel_size"), f"{len(devices)} card(s) is not a multiple of TP {tp}",
                           f"give a multiple of {tp} cards, or change tensor_parallel_size")
            drafts.remove(draft)
            continue
        draft.groups = [devices[i:i + tp] for i in range(0, len(devices), tp)]
        for device in devices:
            if cards.held(device):
                findings.error(draft.at("devices"), f"card {device} is held by {cards.holders(device)}",
                               "free the card or choose another one")
            users.setdefault(device, []).append(draft)
    for device, sharing in sorted(users.items()):
        if len(sharing) > 1 and not all(d.spec.share_devices for d in sharing):
            for draft in sharing:
                if not draft.spec.share_devices:
                    others = ", ".join(d.spec.name for d in sharing if d is not draft)
                    findings.error(draft.at("devices"), f"card {device} is also given to {others}",
                                   "set share_devices: true on every service sharing the card, or give it another")


def _choose_cards(draft: Draft, cards: Cards, taken: set[int], findings: Findings) -> list[int] | None:
    spec = draft.spec
    if spec.devices is not None:
        if len(set(spec.devices)) != len(spec.devices):
            findings.error(draft.at("devices"), f"lists a card twice, got {spec.devices}", "list each card once")
            return None
        missing = [d for d in spec.devices if d >= cards.count]
        if missing:
            findings.error(draft.at("devices"), f"cards {missing} do not exist on this host (it has {cards.count}"
                                                f"{': 0-' + str(cards.count - 1) if cards.count else ''})",
                           "use card indices the host has (inferfleet plan shows them after preflight)")
            return None
        return list(spec.devices)
    wanted = spec.device_count or spec.tensor_parallel_size
    free = [i for i in range(cards.count) if i not in taken and not cards.held(i)]
    if wanted > len(free):
        findings.error(draft.at("device_count"), f"needs {wanted} free card(s), the host has {len(free)} "
                                                 f"(of {cards.count}; others are taken or held)",
                       "lower device_count, free cards, or move the service to another host")
        return None
    return free[:wanted]


def assign_ports(drafts: list[Draft], findings: Findings) -> None:
    """One instance per card group x replica x model; the service's port is the first, the next ones follow."""
    used: dict[int, str] = {}
    for draft in list(drafts):
        instances = [{"group": group, "replica": replica, "model": model}
                     for group in draft.groups for replica in range(draft.spec.replicas) for model in draft.models]
        for offset, inst in enumerate(instances):
            port = draft.spec.port + offset
            problem = (f"{port} (instance {offset + 1} of {len(instances)}) is outside 1-65535" if port > 65535
                       else f"{port} is also used by service {used[port]} on this host" if port in used else "")
            if problem:
                findings.error(draft.at("port"), problem, "give each service a port range of its own: instances "
                                                          "take consecutive ports from port")
                drafts.remove(draft)
                break
            used[port] = draft.spec.name
            inst["port"] = port
        else:
            draft.instances = instances


def size_memory(drafts: list[Draft], findings: Findings) -> None:
    """The memory fraction of each instance: given, or split between the instances sharing a card; a card's
    fractions may not sum past 1.0."""
    on_card: dict[int, list[Draft]] = {}
    for draft in drafts:
        for inst in draft.instances:
            for device in inst["group"]:
                on_card.setdefault(device, []).append(draft)
    budget = serving_default("shared_memory_budget_tenths")
    for draft in drafts:
        for inst in draft.instances:
            sharing = max((len(on_card.get(d, [])) for d in inst["group"]), default=1)
            if draft.spec.gpu_memory_utilization is not None:
                inst["fraction"] = float(draft.spec.gpu_memory_utilization)
            elif sharing > 1:
                inst["fraction"] = (budget // sharing) / 10 or 0.05
            else:
                inst["fraction"] = serving_default("gpu_memory_utilization")
    totals: dict[int, float] = {}
    for draft in drafts:
        for inst in draft.instances:
            for device in inst["group"]:
                totals[device] = totals.get(device, 0.0) + inst["fraction"]
    for device, sharers in sorted(on_card.items()):
        if totals[device] > 1.0 + 1e-9:
            names = sorted({d.spec.name for d in sharers})
            first = next(d for d in sharers if d.spec.name == names[0])
            findings.error(first.at("gpu_memory_utilization"),
                           f"instances on card {device} ({', '.join(names)}) ask for {totals[device]:.2f} of its "
                           f"memory; the sum may not pass 1.0", "lower gpu_memory_utilization of the sharers")


def service_env(draft: Draft, platform: str, stack: str, host_env: dict, base_dir: Path | None,
                findings: Findings) -> dict | None:
    """preset < host inferfleet_env < env_file < env."""
    key = f"gaudi/{stack}" if platform == "gaudi" else platform
    choices = presets()[key]
    name = draft.spec.env_preset or "default"
    if name not in choices:
        findings.error(draft.at("env_preset"), f"is not a preset of {key}, got {name!r}",
                       f"use one of {', '.join(choices)} (roles/vllm_service/files/presets.yml)")
        return None
    env = dict(choices[name])
    if env.pop("buckets", None) == "derive":
        env.update(hpu_buckets(stack, draft.max_model_len, draft.max_num_seqs, draft.max_batched))
    env.update({str(k): _env_text(v) for k, v in host_env.items()})
    if draft.spec.env_file is not None:
        loaded, _, problem = load_mapping(draft.spec.env_file, base_dir, "env_file")
        bad = [k for k in (loaded or {}) if not re.fullmatch(schema.ENV_NAME, str(k))]
        if problem or bad:
            findings.error(draft.at("env_file"), problem or f"{bad[0]!r} is not an environment variable name",
                           "give a JSON/YAML file of NAME: value pairs (a path relative to the inventory)")
            return None
        env.update({str(k): _env_text(v) for k, v in loaded.items()})
    env.update({k: _env_text(v) for k, v in (draft.spec.env or {}).items()})
    return env


def _env_text(value) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class EmitContext:
    """What every instance of a host shares when its container is written."""
    host: HostInput
    cards: Cards
    stack: str
    address: str
    warmup_root: str
    ascend_paths: list[str]


def emit_instances(drafts: list[Draft], host: HostInput, cards: Cards, findings: Findings) -> list[dict]:
    hv = host.vars
    platform = cards.platform
    ctx = EmitContext(host, cards, hv.get("inferfleet_gaudi_stack", "vllm-fork"),
                      hv.get("ansible_host") or host.name,
                      hv.get("inferfleet_warmup_cache_dir", schema.Inventory.model_fields[
                          "inferfleet_warmup_cache_dir"].default),
                      hv.get("accel_runtime_ascend_host_paths") or container_access()["ascend_host_paths"])
    default_image = (hv.get("inferfleet_images") or {}).get(platform) or hv.get("inferfleet_image")
    if platform == "gaudi" and not cards.devices and drafts:
        findings.warn("inferfleet_accelerator", "module ids not discovered: HABANA_VISIBLE_MODULES uses card "
                                                "indices", "run preflight first, then `inferfleet plan`")
    instances = []
    for draft in drafts:
        draft.image = draft.spec.image or default_image or ""
        if not draft.image:
            findings.error(draft.at("image"), "is not set and the host has no image for its platform",
                           f"set image on the service, or inferfleet_images.{platform} for the host")
            continue
        env = service_env(draft, platform, ctx.stack, hv.get("inferfleet_env") or {}, host.base_dir, findings)
        if env is None:
            continue
        draft.env = env
        draft.weights, draft.weights_source = weights_bytes(
            draft.spec.weights_gib, draft.spec.dtype, draft.config,
            Path(draft.models[0]) if len(draft.models) == 1 else None)
        instances += _emit_service(draft, ctx, findings)
    return instances


def _emit_service(draft: Draft, ctx: EmitContext, findings: Findings) -> list[dict]:
    spec, config, platform, tp = draft.spec, draft.config, ctx.cards.platform, draft.spec.tensor_parallel_size
    per_token = kv_bytes_per_token(config, tp, spec.kv_cache_dtype, spec.dtype) \
        if config and draft.task == "generate" and has_attention_shape(config) else 0
    per_card_weights = int(draft.weights / tp) if draft.weights else None
    embedding_dim = int(text_config(config).get("hidden_size", 0)) if config and draft.task == "embed" else None
    memory = ctx.cards.memory_bytes
    if per_card_weights is None and platform != "cpu" and config:
        findings.warn(draft.at("weights_gib"), "weight size unknown: memory not checked", "set weights_gib")
    out = []
    many = len(draft.instances) > 1
    for position, inst in enumerate(draft.instances):
        name = f"{spec.name}-{position}" if many else spec.name
        concurrency = None
        if platform != "cpu" and memory and per_card_weights is not None:
            budget = memory * inst["fraction"] - per_card_weights
            if budget <= 0:
                findings.error(draft.at("gpu_memory_utilization"),
                               f"instance {name}: weights need {per_card_weights / GIB:.1f} GiB per card but "
                               f"{inst['fraction']} of {memory / GIB:.0f} GiB is {memory * inst['fraction'] / GIB:.1f}"
                               f" GiB", "raise tensor_parallel_size or gpu_memory_utilization")
                continue
            if per_token:
                concurrency = int(budget // (per_token * draft.max_model_len))
                if concurrency < 1:
                    findings.error(draft.at("max_model_len"),
                                   f"instance {name}: {draft.max_model_len} tokens of KV cache need "
                                   f"{per_token * draft.max_model_len / GIB:.2f} GiB per card, {budget / GIB:.2f} GiB "
                                   f"left after the weights", "lower max_model_len, use kv_cache_dtype fp8 or more "
                                                              "cards")
                    continue
                if concurrency < draft.max_num_seqs:
                    findings.warn(draft.at("max_num_seqs"), f"instance {name}: KV cache holds {concurrency} "
                                                            f"full-length sequences, fewer than max_num_seqs "
                                                            f"{draft.max_num_seqs}",
                                  f"lower max_num_seqs to {concurrency} or max_model_len")
        out.append(_instance(draft, ctx, inst, name, per_token, concurrency, embedding_dim))
    return out


def _instance(draft: Draft, ctx: EmitContext, inst: dict, name: str, per_token: int, concurrency, embedding_dim):
    spec, platform, model = draft.spec, ctx.cards.platform, inst["model"]
    served = spec.served_model_name if spec.models is None else None
    served = served or (Path(model).name if spec.models is not None else spec.name)
    env = dict(draft.env)
    group = inst["group"]
    if platform == "gaudi":
        env["HABANA_VISIBLE_MODULES"] = ",".join(str(ctx.cards.devices.get(d, {}).get("module_id", d)) for d in group)
    elif platform == "ascend":
        env["ASCEND_RT_VISIBLE_DEVICES"] = ",".join(map(str, group))
    elif platform == "nvidia":
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(map(str, group))
    warmup_dir = None
    if platform == "gaudi" and spec.warmup_cache:
        root = spec.warmup_cache if isinstance(spec.warmup_cache, str) else ctx.warmup_root
        key_env = {k: v for k, v in env.items() if "BUCKET" in k or k == "PT_HPU_LAZY_MODE"}
        key = digest([model, spec.tensor_parallel_size, draft.max_model_len, spec.dtype, draft.image, ctx.stack,
                      key_env])[:16]
        warmup_dir = f"{root.rstrip('/')}/{spec.name}-{key}"
        env["PT_HPU_RECIPE_CACHE_CONFIG"] = f"{warmup_dir},false,{serving_default('warmup_cache_mb')}"
    args = vllm_args(draft, model, served, inst, platform)
    container = container_spec(name, draft, platform, group, env, model, warmup_dir, args, ctx.ascend_paths)
    smoke = {"task": draft.task, "served_model_name": served, "embedding_dim": embedding_dim}
    startup_timeout = spec.startup_timeout or serving_default("startup_timeout", platform)
    # what the serve stage applies to the instance: a change of any of it recreates the container
    config_hash = digest([container, smoke, startup_timeout], ordered=True)[:12]
    container["labels"]["inferfleet.config-hash"] = config_hash
    return {
        "service": spec.name, "name": name, "image": draft.image, "model": model, "served_model_name": served,
        "task": draft.task, "devices": group, "port": inst["port"], "tensor_parallel_size": spec.tensor_parallel_size,
        "memory_fraction": inst["fraction"] if platform != "cpu" else None, "env": env, "args": args,
        "docker_run": docker_run_argv(container), "container": container, "smoke": smoke,
        "health_url": f"http://{ctx.address}:{inst['port']}/health", "startup_timeout": startup_timeout,
        "warmup_cache_dir": warmup_dir, "config_hash": config_hash,
        "kv_cache": {"bytes_per_token": per_token, "weights_bytes": draft.weights,
                     "weights_source": draft.weights_source, "max_concurrency": concurrency},
    }


def vllm_args(draft: Draft, model: str, served: str, inst: dict, platform: str) -> list[str]:
    spec = draft.spec
    args = [model, "--host", "0.0.0.0", "--port", str(inst["port"]), "--served-model-name", served,
            "--tensor-parallel-size", str(spec.tensor_parallel_size), "--max-model-len", str(draft.max_model_len),
            "--max-num-seqs", str(draft.max_num_seqs)]
    if draft.max_batched:
        args += ["--max-num-batched-tokens", str(draft.max_batched)]
    if platform != "cpu":
        args += ["--gpu-memory-utilization", str(inst["fraction"])]
    if spec.dtype:
        args += ["--dtype", spec.dtype]
    if spec.kv_cache_dtype:
        args += ["--kv-cache-dtype", spec.kv_cache_dtype]
    if draft.task in POOLING_TASKS:
        args += ["--runner", "pooling"]
    return args + [str(a) for a in spec.extra_args or []]


def container_spec(name, draft: Draft, platform, group, env, model, warmup_dir, args, ascend_paths) -> dict:
    """The instance's container, in the terms of community.docker.docker_container (the serve stage passes it
    as is) and from which the docker run argv is written."""
    container = {
        "name": f"inferfleet-{name}", "image": draft.image, "entrypoint": ["vllm"], "command": ["serve", *args],
        "env": dict(sorted(env.items())), "network_mode": "host", "ipc_mode": None, "runtime": None,
        "capabilities": [], "devices": [], "volumes": [], "restart_policy": serving_default("restart_policy"),
        "labels": {"inferfleet.service": draft.spec.name, "inferfleet.instance": name},
    }
    runtime = container_access()["runtimes"].get(platform)
    if platform == "gaudi":
        container.update(runtime=runtime, capabilities=["sys_nice"], ipc_mode="host")
    elif platform == "nvidia":
        container.update(runtime=runtime, ipc_mode="host")
    elif platform == "ascend":
        # all cards up to the highest planned one mounted, ASCEND_RT_VISIBLE_DEVICES selects
        container["devices"] = [f"/dev/davinci{i}:/dev/davinci{i}" for i in range(max(group) + 1)]
        container["devices"] += [f"{p}:{p}" for p in ascend_paths if p.startswith("/dev/")]
        container["volumes"] += [f"{p}:{p}:ro" for p in ascend_paths if not p.startswith("/dev/")]
    if model.startswith("/"):
        container["volumes"].append(f"{model}:{model}:ro")
    if warmup_dir:
        container["volumes"].append(f"{warmup_dir}:{warmup_dir}")
    return container


def docker_run_argv(container: dict) -> list[str]:
    """The docker run command equivalent to a container spec (users debug with it)."""
    argv = ["docker", "run", "-d", "--name", container["name"], "--restart", container["restart_policy"]]
    for key, value in container["labels"].items():
        argv += ["--label", f"{key}={value}"]
    argv.append(f"--net={container['network_mode']}")
    if container["runtime"]:
        argv.append(f"--runtime={container['runtime']}")
    argv += [f"--cap-add={cap}" for cap in container["capabilities"]]
    if container["ipc_mode"]:
        argv.append(f"--ipc={container['ipc_mode']}")
    for device in container["devices"]:
        argv += ["--device", device]
    for key, value in container["env"].items():
        argv += ["-e", f"{key}={value}"]
    for volume in container["volumes"]:
        argv += ["-v", volume]
    return argv + ["--entrypoint", container["entrypoint"][0], container["image"], *container["command"]]


# --- the saved plan ---------------------------------------------------------------------------------------------
def plan_inputs(host: HostInput, drafts: list[Draft]) -> dict:
    """Hashes of what a host's plan was computed from: its settings (with the model configs and env files they
    name) and its cards. A saved plan is applied only while both are unchanged."""
    settings = _canonical({k: v for k, v in host.vars.items() if k in schema.SETTINGS and k not in _RUN_SETTINGS})
    files = {d.spec.name: [d.config, _file_text(d.spec.env_file, host.base_dir)] for d in drafts}
    discovered = host.discovered or {}
    cards = {"count": discovered.get("count"), "model": discovered.get("model"),
             "memory_total_mib": discovered.get("memory_total_mib"),
             "devices": [{k: d.get(k) for k in ("index", "module_id", "held", "numa_node")}
                         for d in discovered.get("devices", [])]} if discovered else "declared"
    return {"settings": digest([settings, files])[:16], "cards": digest(cards)[:16]}


def _canonical(value):
    """Keys as strings, so that any settings sort (a free-form mapping may hold a null or numeric key)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


_RUN_SETTINGS = frozenset({"inferfleet_run_dir", "inferfleet_saved_plan"})  # say where, not what, to run


def _file_text(value, base_dir: Path | None):
    if not isinstance(value, str):
        return value
    path = Path(value) if Path(value).is_absolute() or base_dir is None else base_dir / value
    try:
        return path.read_text()
    except OSError:
        return None


def stale_reasons(was: dict, now: dict) -> list[str]:
    """Why a host plan saved from inputs `was` may not be applied to inputs `now` (empty: it may)."""
    reasons = []
    if was.get("settings") != now.get("settings"):
        reasons.append("the host's settings (or a model config / env file they name) changed since the plan was "
                       "saved")
    if was.get("cards") != now.get("cards"):
        reasons.append("the cards preflight discovered differ from those the plan was computed with"
                       + (" (it was computed before discovery)" if was.get("cards") == digest("declared")[:16]
                          else ""))
    return reasons
