"""The deployment planner: from a host's inventory variables (and, when known, its discovered cards) to the exact
containers the serve stage will run, or the reasons it cannot.

One source of truth: `inferfleet plan` prints it, preflight saves it in the run directory, and the later stages
apply that saved plan (plugins/action/plan.py). Offline and pure: no host is contacted.

The steps, each a function of its own: settings (the schema) -> parse each service -> allocate cards ->
assign ports -> size memory -> emit containers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from . import fabric, frontdoor, schema
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
    """A serving default; a per-platform one (a mapping with a `default`) for the platform."""
    value = role_data("vllm_service", "serving_defaults.yml")[key]
    return value.get(platform, value["default"]) if isinstance(value, dict) and "default" in value else value


def container_access() -> dict:
    return role_data("accel_runtime", "container_access.yml")


def vllm_flags() -> dict:
    return role_data("vllm_service", "vllm_flags.yml")


def version_tuple(text: str) -> tuple[int, int, int]:
    """0.10.1 -> (0, 10, 1); a suffix (rc1, +cpu, .post1) does not move a version past the next release."""
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else (0, 0, 0)


def image_reference(image: str) -> tuple[str, str]:
    """(repository, tag) of an image reference; tag '' when it has none."""
    name = image.split("@", 1)[0]
    repository, _, tag = name.rpartition(":")
    if not repository or "/" in tag:
        return name, ""
    return repository, tag


@dataclass
class HostPlan:
    host: str
    platform: str
    accelerator: dict
    instances: list[dict] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # hashes of what the plan was computed from
    fabric: dict = field(default_factory=dict)  # the fabric stage's gate (inferfleet.fabric.plan_fabric)
    front_doors: list[dict] = field(default_factory=list)  # inferfleet.frontdoor

    def to_dict(self) -> dict:
        return {"platform": self.platform, "accelerator": self.accelerator, "instances": self.instances,
                "front_doors": self.front_doors, "inputs": self.inputs, "fabric": self.fabric}


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
def _ceil(value: int, step: int) -> int:
    return -(-value // step) * step


def hpu_buckets(stack: str, max_model_len: int, max_num_seqs: int, max_num_batched_tokens: int,
                input_len: list[int] | None = None, output_len: list[int] | None = None,
                hot_buckets: list[int] | None = None) -> dict[str, str]:
    """The HPU bucket ranges seed 004's start_gaudi_vllm_server.sh derives from -i/-o/-b/-t and -r (vllm-fork
    aice/v1.21.0, scripts/utils.sh set_bucketing and set_partial_warmup). Without -i, prompts run from 1 to
    max_model_len tokens; without -o, no output beyond that."""
    input_min, input_max = input_len or (1, max_model_len)
    output_max = (output_len or (0, 0))[1]
    prompt_bs_max = max(1, min(max_num_batched_tokens // input_min, max_num_seqs))
    # the script's prompt maximum is one step past the input maximum; a prompt bucket longer than
    # max_num_batched_tokens leaves no batch to profile, so it stops there
    prompt_seq_max = min(_ceil(input_max, 128) + 128, max(128, _ceil(max_num_batched_tokens, 128)))
    decode_step = min(-(-max_num_seqs // 16), 16)
    decode_bs_max = _ceil(max_num_seqs, decode_step)
    block_max = _ceil((-(-(input_max + output_max) // 128) + 1) * decode_bs_max, 128)
    values = {
        "PROMPT_BS": (1, 1, prompt_bs_max),
        "PROMPT_SEQ": (_ceil(input_min, 128), 128, prompt_seq_max),
        "DECODE_BS": (1, decode_step, decode_bs_max),
        "DECODE_BLOCK": (_ceil(-(-input_min // 128), 128), 128, block_max),
    }
    names = {"PROMPT_SEQ": "PROMPT_QUERY"} if stack == "vllm-gaudi" else {}
    env = {}
    for key, (low, step, high) in values.items():
        name = names.get(key, key)
        env[f"VLLM_{name}_BUCKET_MIN"] = str(low)
        env[f"VLLM_{name}_BUCKET_STEP"] = str(step)
        env[f"VLLM_{name}_BUCKET_MAX"] = str(high)
    if hot_buckets:
        # -r max_bs,max_seq: warm up only the hot buckets; decode runs on HPU graphs
        warm_bs, warm_seq = hot_buckets
        env.update({"VLLM_SKIP_LAZY_WARMUP": "true", f"VLLM_{names.get('PROMPT_SEQ', 'PROMPT_SEQ')}_BUCKET_MAX":
                    str(warm_seq), "VLLM_DECODE_BS_BUCKET_MAX": str(warm_bs),
                    "VLLM_DECODE_BLOCK_BUCKET_MAX": str(_ceil(-(-(warm_seq + output_max) * warm_bs // 128), 128))})
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
    distribution: str = ""  # the host's OS (ansible_facts.distribution), when preflight has seen it

    def held(self, index: int) -> bool:
        return bool(self.devices.get(index, {}).get("held"))

    def module_id(self, index: int) -> int:
        """Habana's stable card id (hl-smi -Q index,module_id); the index until preflight discovered it."""
        return int(self.devices.get(index, {}).get("module_id", index))

    def index_of_module(self, module: int) -> int | None:
        if not self.devices:
            return module
        return next((i for i, d in self.devices.items() if d.get("module_id") == module), None)

    def numa_node(self, index: int):
        return self.devices.get(index, {}).get("numa_node")

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
    vllm_version: str | None = None  # of the image, when known
    version_source: str = ""
    groups: list[list[int]] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)  # {group, replica, model, port, fraction}
    local_dir: Path | None = None  # the controller's copy of the model (fleet cache, file:// source), if any

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
    """The plan of every host; never raises on bad input: each problem is an error naming host and field.

    Hosts of a group usually share every setting but their address: a host whose inputs equal an earlier one's
    gets that plan again, with its own name and address, instead of being planned anew. Such plans share their
    nested values (env, container): a plan is read, serialized or saved, never changed in place."""
    plan = Plan()
    planned: dict[str, tuple[HostInput, HostPlan, Findings]] = {}
    for host in hosts:
        key = _inputs_key(host)
        if key in planned:
            host_plan, findings = _same_as(planned[key], host)
        else:
            host_plan, findings = plan_host(host)
            planned[key] = (host, host_plan, findings)
        plan.hosts[host.name] = host_plan
        plan.errors += findings.errors
        plan.warnings += findings.warnings
    return plan


def _inputs_key(host: HostInput) -> str:
    """Everything a host's plan depends on except its name and address."""
    key = [{k: v for k, v in host.vars.items() if k != "ansible_host"}, sorted(host.groups), host.discovered,
           str(host.base_dir)]
    try:
        return digest(key)
    except TypeError:  # a mapping with keys that do not sort together (a null beside strings)
        return digest(_canonical(key))


def _same_as(earlier: tuple[HostInput, HostPlan, Findings], host: HostInput) -> tuple[HostPlan, Findings]:
    _, plan, found = earlier
    address = host.vars.get("ansible_host") or host.name
    instances = [dict(inst, health_url=f"http://{address}:{inst['port']}/health") for inst in plan.instances]
    # a front door's configuration names its host in the telemetry header
    doors = [frontdoor.renamed(door, host.name, address) for door in plan.front_doors]
    findings = Findings(host.name)
    findings.errors = [Problem(host.name, p.field, p.message, p.fix) for p in found.errors]
    findings.warnings = [Problem(host.name, p.field, p.message, p.fix) for p in found.warnings]
    return HostPlan(host.name, plan.platform, dict(plan.accelerator), instances, dict(plan.inputs),
                    plan.fabric, doors), findings


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
    services = hv.get("inferfleet_services") or [] if schema.serving_enabled(hv) else []
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
    check_api_keys(hv, drafts, findings)
    if not findings.errors:
        host_plan.instances = emit_instances(drafts, host, cards, findings)
        address = emit_context(host, cards).address
        image = hv.get("inferfleet_front_door_image", _default("inferfleet_front_door_image"))
        root = hv.get("inferfleet_front_door_dir") or _default("inferfleet_front_door_dir")
        doors = frontdoor.plan_front_doors(host_plan.instances, [d.spec for d in drafts], host.name, address, image,
                                           root, findings, host.base_dir)
        fleet_specs = [schema.FleetFrontDoor(**raw) for raw in hv.get("inferfleet_fleet_front_doors") or []
                       if schema.serving_enabled(hv)]
        host_plan.front_doors = doors + frontdoor.plan_fleet_front_doors(
            fleet_specs, host_plan.instances, doors, host.name, address, image, root, findings, host.base_dir)
    host_plan.fabric = plan_fabric_step(host, cards, findings)
    host_plan.inputs = plan_inputs(host, drafts)
    return host_plan, findings


def check_api_keys(hv: dict, drafts: list[Draft], findings: Findings) -> None:
    """vLLM checks a key on /v1 paths only: a rerank service's /rerank answers without it unless a front door
    checks it."""
    keys = hv.get("inferfleet_api_keys") or {}
    for draft in drafts:
        if draft.spec.name in keys and draft.task == "rerank" and not draft.spec.front_door:
            findings.warn("inferfleet_api_keys", f"service {draft.spec.name}: vLLM checks the key on /v1 paths "
                                                 "only, and /rerank answers without it",
                          "give the service a front_door: it checks the key on every path")


def plan_fabric_step(host: HostInput, cards: Cards, findings: Findings) -> dict:
    """The fabric gate of the host (inferfleet.fabric): its collective test runs on all the host's cards."""
    present = sorted(cards.devices) if cards.devices else list(range(cards.count))
    access = card_access(cards.platform, present, emit_context(host, cards)) if present else None
    return fabric.plan_fabric(host.vars, cards, platform_image(host.vars, cards), access, findings)


def controller_model_dir(host: HostInput, model: str) -> Path | None:
    """The controller's copy of a model the host's inferfleet_models names a source for: the fleet cache's (after
    the models stage or `inferfleet models pull`), or its file:// directory. Its config.json and safetensors are
    what the planner then computes with. In a rehearsal (inferfleet rehearse), production's catalogue and cache:
    the rehearsal's hold stand-ins, and the plan is production's."""
    settings = {**host.vars, **(host.vars.get("inferfleet_rehearsal_planning") or {})}
    value = (settings.get("inferfleet_models") or {}).get(model) if isinstance(
        settings.get("inferfleet_models"), dict) else None
    if value is None:
        return None
    from . import models

    cache = settings.get("inferfleet_model_cache_dir")
    return models.controller_copy(value, Path(cache) if cache else models.default_cache())


def host_cards(platform: str, accel: dict, discovered: dict | None, simulated: bool) -> Cards:
    discovered = discovered or {}
    count = int(discovered.get("count") or accel.get("count") or 0) if platform != "cpu" else 0
    if discovered.get("memory_total_mib"):
        memory = int(discovered["memory_total_mib"]) * MIB
    else:
        memory = int(float(accel.get("memory_gib") or 0) * GIB)
    return Cards(platform, count, memory, discovered.get("model") or accel.get("model", ""),
                 {d["index"]: d for d in discovered.get("devices", [])}, bool(discovered),
                 bool(discovered.get("simulated") or simulated), str(discovered.get("distribution") or ""))


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
    local_dir = controller_model_dir(host, models[0]) if len(models) == 1 else None
    if spec.config_source is None and ((local_dir or Path(models[0])) / "config.json").is_file():
        loaded, source, _ = load_mapping(str(local_dir or models[0]), None, "model_config")
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
                  spec.max_num_seqs or serving_default("max_num_seqs", platform), max_batched, local_dir=local_dir)
    check_model_limits(draft, platform, findings)
    return draft if check_gaudi_keys(draft, platform, findings) else None


GAUDI_KEYS = ("warmup_cache", "skip_warmup_when_cached", "input_len", "output_len", "hot_buckets",
              "unlimited_memlock", "quant_config")


def check_gaudi_keys(draft: Draft, platform: str, findings: Findings) -> bool:
    """Keys only Gaudi's stack reads are refused elsewhere, and the ones that need each other come together."""
    spec = draft.spec
    given = [key for key in GAUDI_KEYS if getattr(spec, key) not in (None, False)]
    if platform != "gaudi" and given:
        findings.error(draft.at(given[0]), f"is a Gaudi setting, and the host is {platform}",
                       f"remove {given[0]} from the service")
        return False
    if spec.skip_warmup_when_cached and not spec.warmup_cache:
        findings.error(draft.at("skip_warmup_when_cached"), "needs a warmup cache to look into",
                       "set warmup_cache: true (or a directory) on the service")
        return False
    for key in ("input_len", "output_len"):
        low, high = getattr(spec, key) or (1, 1)
        if low > high:
            findings.error(draft.at(key), f"is [min, max], got [{low}, {high}]", f"write {key}: [{high}, {low}]")
            return False
    return True


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
        if cards.platform == "gaudi" and not _gaudi_groups_ok(draft, cards, findings):
            drafts.remove(draft)
            continue
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


def gaudi_groups() -> dict[int, list[set[int]]]:
    """The module-id groups Habana runs partial-card workloads on, by size."""
    return {int(size): [set(g) for g in groups] for size, groups in container_access()["gaudi_card_groups"].items()}


GAUDI_GROUPS = "2 cards with module ids {0,1} {2,3} {4,5} {6,7} or 4 cards {0,1,2,3} {4,5,6,7}"
GAUDI_GROUPS_RULE = f"Habana runs a workload on 1 card, on all of them, or on {GAUDI_GROUPS}"


def _gaudi_groups_ok(draft: Draft, cards: Cards, findings: Findings) -> bool:
    """Each instance's cards form a group Habana supports, judged by module ids (stable across reboots). Before
    preflight has read the module ids the rule cannot be judged: a warning, and preflight decides."""
    allowed = gaudi_groups()
    for group in draft.groups:
        if len(group) in (1, cards.count):
            continue
        modules = {cards.module_id(d) for d in group}
        if modules not in allowed.get(len(group), []):
            choices = [sorted(cards.index_of_module(m) for m in g) for g in allowed.get(len(group), [])]
            choices = [c for c in choices if all(i is not None and i < cards.count for i in c)]
            report = findings.error if cards.devices else findings.warn
            report(draft.at("devices"), f"cards {group} (module ids {sorted(modules)}) are not a card group "
                                                f"Habana supports: {GAUDI_GROUPS_RULE}",
                           f"use cards {' or '.join(map(str, choices))}" if choices
                           else "give the instance 1 card or all of the host's cards (tensor_parallel_size)")
            return not cards.devices
    return True


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
    tp = spec.tensor_parallel_size
    wanted = spec.device_count or tp
    free = [i for i in range(cards.count) if i not in taken and not cards.held(i)]
    chosen = pick_cards(free, wanted, tp, cards)
    if chosen is None:
        findings.error(draft.at("device_count"), f"needs {wanted} free card(s), the host has {len(free)} "
                                                 f"(of {cards.count}; others are taken or held)"
                       + (f" in groups of {GAUDI_GROUPS}"
                          if cards.platform == "gaudi" and tp in (2, 4) else ""),
                       "lower device_count, free cards, or move the service to another host")
    return chosen


def pick_cards(free: list[int], wanted: int, tp: int, cards: Cards) -> list[int] | None:
    """Free cards for a service: whole Habana module groups on Gaudi, from the last card backwards (the first
    cards are what people name by hand), and from one NUMA node when one node has enough."""
    if wanted > len(free) or wanted % tp:
        return None
    if cards.platform == "gaudi" and tp in gaudi_groups() and tp != cards.count:
        # a group with a card preflight did not find (index None) is no group to pick
        groups = [[cards.index_of_module(m) for m in g] for g in gaudi_groups()[tp]]
        usable = [sorted(g) for g in reversed(groups) if all(i is not None and i in free for i in g)]
        if len(usable) * tp < wanted:
            return None
        by_node: dict = {}
        for group in usable:
            by_node.setdefault(cards.numa_node(group[0]), []).append(group)
        need = wanted // tp
        pool = next((g for g in by_node.values() if len(g) >= need), usable)
        return sorted(i for g in pool[:need] for i in g)
    by_node = {}
    for index in reversed(free):
        by_node.setdefault(cards.numa_node(index), []).append(index)
    pool = next((indices for indices in by_node.values() if len(indices) >= wanted), list(reversed(free)))
    return sorted(pool[:wanted])


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
    literal = env.pop("pooling", None) if draft.task in POOLING_TASKS else None
    env.pop("pooling", None)
    if env.pop("buckets", None) == "derive":
        spec = draft.spec
        env.update(hpu_buckets(stack, draft.max_model_len, draft.max_num_seqs, draft.max_batched, spec.input_len,
                               spec.output_len, spec.hot_buckets))
    if platform == "gaudi" and stack == "vllm-fork" and draft.spec.tensor_parallel_size > 1:
        env.update(serving_default("tensor_parallel_env"))
    if draft.spec.quantization:
        env.update(_quantization(draft.spec.quantization, platform).get("env", {}))
    env.update(literal or {})  # a preset's own values win; derived ones fill what it leaves open
    if platform == "gaudi" and stack == "vllm-fork":
        env.update(_eager_model_env(draft))
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
    if platform == "gaudi" and draft.task in POOLING_TASKS:
        limit = serving_default("pooling_prompt_seq_bucket_max")
        seq_max = env.get("VLLM_PROMPT_SEQ_BUCKET_MAX") or env.get("VLLM_PROMPT_QUERY_BUCKET_MAX")
        if seq_max and seq_max.isdigit() and int(seq_max) > limit:
            own = any(k in (draft.spec.env or {}) for k in ("VLLM_PROMPT_SEQ_BUCKET_MAX",
                                                             "VLLM_PROMPT_QUERY_BUCKET_MAX"))
            findings.error(draft.at("env" if own else "max_model_len"),
                           f"makes the prompt buckets reach {seq_max} tokens; Gaudi buckets {draft.task} prompts "
                           f"up to {limit}", f"keep VLLM_PROMPT_SEQ_BUCKET_MAX (and max_model_len) at {limit} or less")
            return None
    return env


def _eager_model_env(draft: Draft) -> dict:
    rule = serving_default("eager_pooling_models")
    if draft.task not in POOLING_TASKS or not draft.config:
        return {}
    named = any(word in Path(model).name.lower() for model in draft.models for word in rule["name_contains"])
    parameters = estimate_parameters(draft.config) or 0
    return dict(rule["env"]) if named and 0 < parameters < rule["max_parameters"] else {}


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
    ascend_mode: str = "devices"


def _default(setting: str):
    return schema.Inventory.model_fields[setting].default


def emit_context(host: HostInput, cards: Cards) -> EmitContext:
    hv = host.vars
    return EmitContext(host, cards, hv.get("inferfleet_gaudi_stack", "vllm-fork"), hv.get("ansible_host") or host.name,
                       hv.get("inferfleet_warmup_cache_dir", _default("inferfleet_warmup_cache_dir")),
                       hv.get("accel_runtime_ascend_host_paths") or container_access()["ascend_host_paths"],
                       hv.get("accel_runtime_ascend_mode") or "devices")


def platform_image(hv: dict, cards: Cards) -> str:
    """The host's image for its platform (inferfleet_images, else inferfleet_image), as the variant of its cards."""
    image = (hv.get("inferfleet_images") or {}).get(cards.platform) or hv.get("inferfleet_image") or ""
    return image_variant(image, cards) if cards.platform == "ascend" and image else image


def emit_instances(drafts: list[Draft], host: HostInput, cards: Cards, findings: Findings) -> list[dict]:
    hv = host.vars
    platform = cards.platform
    ctx = emit_context(host, cards)
    default_image = (hv.get("inferfleet_images") or {}).get(platform) or hv.get("inferfleet_image")
    if platform == "gaudi" and not cards.devices and drafts:
        findings.warn("inferfleet_accelerator", "module ids not discovered: HABANA_VISIBLE_MODULES uses card "
                                                "indices", "run preflight first, then `inferfleet plan`")
    instances = []
    for draft in drafts:
        draft.image = draft.spec.image or default_image or ""
        if platform == "ascend" and draft.image:
            draft.image = image_variant(draft.image, cards)
        if not draft.image:
            findings.error(draft.at("image"), "is not set and the host has no image for its platform",
                           f"set image on the service, or inferfleet_images.{platform} for the host")
            continue
        env = service_env(draft, platform, ctx.stack, hv.get("inferfleet_env") or {}, host.base_dir, findings)
        if env is None:
            continue
        draft.env = env
        draft.vllm_version, draft.version_source = image_vllm_version(draft, platform, hv)
        if not check_vllm_flags(draft, platform, findings):
            continue
        draft.weights, draft.weights_source = weights_bytes(
            draft.spec.weights_gib, draft.spec.dtype, draft.config,
            draft.local_dir or (Path(draft.models[0]) if len(draft.models) == 1 else None))
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
    # clients name a model by the service's name or by its path, as seed 002's curl and vllm bench serve do
    names = [served] + ([model] if model != served else [])
    # a service with an API key and a front door listens on loopback only: the key cannot be bypassed
    protected = spec.name in (ctx.host.vars.get("inferfleet_api_keys") or {})
    listen = "127.0.0.1" if protected and spec.front_door else "0.0.0.0"
    group = inst["group"]
    access = card_access(platform, group, ctx, spec.unlimited_memlock)
    env = {**draft.env, **access.pop("env")}
    if spec.quant_config:
        env["QUANT_CONFIG"] = spec.quant_config
    warmup_dir = None
    if platform == "gaudi" and spec.warmup_cache:
        root = spec.warmup_cache if isinstance(spec.warmup_cache, str) else ctx.warmup_root
        key_env = {k: v for k, v in env.items() if "BUCKET" in k or k == "PT_HPU_LAZY_MODE"}
        key = digest([model, spec.tensor_parallel_size, draft.max_model_len, spec.dtype, draft.image, ctx.stack,
                      key_env])[:16]
        warmup_dir = f"{root.rstrip('/')}/{spec.name}-{key}"
        env["PT_HPU_RECIPE_CACHE_CONFIG"] = f"{warmup_dir},false,{serving_default('warmup_cache_mb')}"
    args = vllm_args(draft, model, names, inst, platform, listen)
    container = container_spec(name, draft, env, model, warmup_dir, args, access)
    if spec.front_door:  # status finds an instance's front door by it
        container["labels"]["inferfleet.front-door-port"] = str(spec.front_door.port)
    smoke = {"task": draft.task, "served_model_name": served, "embedding_dim": embedding_dim}
    startup_timeout = spec.startup_timeout or serving_default("startup_timeout", platform)
    # what the serve stage applies to the instance: a change of any of it recreates the container
    config_hash = digest([container, smoke, startup_timeout], ordered=True)[:12]
    container["labels"]["inferfleet.config-hash"] = config_hash
    return {
        "service": spec.name, "name": name, "image": draft.image, "model": model, "served_model_name": served,
        "served_model_names": names, "task": draft.task, "devices": group, "port": inst["port"],
        "tensor_parallel_size": spec.tensor_parallel_size, "api_server_count": spec.api_server_count or 1,
        "api_key": protected, "listen": listen,
        "memory_fraction": inst["fraction"] if platform != "cpu" else None, "env": env, "args": args,
        "docker_run": docker_run_argv(container), "container": container, "smoke": smoke,
        "health_url": f"http://{ctx.address}:{inst['port']}/health", "startup_timeout": startup_timeout,
        "warmup_cache_dir": warmup_dir, "config_hash": config_hash,
        "kv_cache": {"bytes_per_token": per_token, "weights_bytes": draft.weights,
                     "weights_source": draft.weights_source, "max_concurrency": concurrency},
    }


def image_variant(image: str, cards: Cards) -> str:
    """A vllm-ascend image named by its version alone, as the variant built for the host's cards and OS."""
    repository, tag = image_reference(image)
    for rule in vllm_flags()["image_variants"]:
        if repository != rule["repository"] or not re.match(rule["bare_tag"], tag) or "@" in image:
            continue
        suffix = next((c["suffix"] for c in rule["cards"] if re.match(c["model"], cards.model)), "")
        if cards.distribution.lower() == "openeuler":
            suffix += rule["openeuler_suffix"]
        return f"{repository}:{tag}{suffix}"
    return image


def image_vllm_version(draft: Draft, platform: str, hv: dict) -> tuple[str | None, str]:
    """The vLLM version of the service's image and where it was learnt: the service, the host's
    inferfleet_vllm_versions for the platform's image, or an image whose tag spells it."""
    if draft.spec.vllm_version:
        return draft.spec.vllm_version, "vllm_version"
    declared = (hv.get("inferfleet_vllm_versions") or {}).get(platform)
    if declared and not draft.spec.image:
        return declared, f"inferfleet_vllm_versions.{platform}"
    repository, tag = image_reference(draft.image)
    for rule in vllm_flags()["image_versions"]:
        match = re.match(rule["tag"], tag) if repository == rule["repository"] else None
        if match:
            return match[1], f"the tag of {draft.image}"
    return None, ""


def _flag_known(flag: str, version: str) -> str:
    """'' when the version has the flag, else why not."""
    rule = vllm_flags()["flags"].get(flag)
    if not rule:
        return ""
    if rule.get("since") and version_tuple(version) < version_tuple(rule["since"]):
        return f"{flag} exists from vLLM {rule['since']} on"
    if rule.get("until") and version_tuple(version) >= version_tuple(rule["until"]):
        return f"{flag} was removed in vLLM {rule['until']}"
    return ""


def check_vllm_flags(draft: Draft, platform: str, findings: Findings) -> bool:
    """The flags the service needs exist in its vLLM version; its extra_args name no flag the version lacks;
    its quantization has a documented way on the platform."""
    spec, version = draft.spec, draft.vllm_version
    if draft.task in POOLING_TASKS and version is None:
        findings.error(draft.at("vllm_version"), f"is unknown for image {draft.image}, and a {draft.task} service's "
                                                 "flags depend on it (--task before vLLM 0.10.1, --runner after)",
                       f"declare inferfleet_vllm_versions.{platform} for the host's image, or vllm_version on the "
                       "service (`vllm --version` in the image tells)")
        return False
    if version and spec.api_server_count:
        reason = _flag_known("--api-server-count", version)
        if reason:
            findings.error(draft.at("api_server_count"), f"{spec.api_server_count}: {reason}, and the image has "
                                                         f"vLLM {version} ({draft.version_source})",
                           "leave api_server_count out (one API server process), or use an image of a later vLLM")
            return False
    if version:
        for arg in spec.extra_args or []:
            reason = _flag_known(str(arg).split("=", 1)[0], version) if str(arg).startswith("--") else ""
            if reason:
                findings.error(draft.at("extra_args"), f"{arg!r}: {reason}, and the image has vLLM {version} "
                                                       f"({draft.version_source})",
                               "remove the flag, or use the one this version has")
                return False
    if spec.quantization:
        methods = vllm_flags()["quantization"]
        method = methods.get(platform, methods["default"]).get(spec.quantization)
        if method is None:
            known = ", ".join(methods.get(platform, methods["default"]))
            findings.error(draft.at("quantization"), f"{platform} serves {known} quantization here, got "
                                                     f"{spec.quantization!r}",
                           f"use one of {known}, or the fork's own flags in extra_args")
            return False
        if method.get("needs_quant_config") and not spec.quant_config:
            findings.error(draft.at("quant_config"), f"is missing; {spec.quantization} on {platform} reads its "
                                                     "quantization config from QUANT_CONFIG",
                           "set quant_config to the Intel Neural Compressor JSON on the host (the model "
                           "calibration writes it)")
            return False
        pinned = method["args"][method["args"].index("--kv-cache-dtype") + 1] \
            if "--kv-cache-dtype" in method["args"] else None
        if pinned and spec.kv_cache_dtype not in (None, pinned):
            findings.error(draft.at("kv_cache_dtype"), f"{spec.quantization} on {platform} needs kv_cache_dtype "
                                                       f"{pinned}, got {spec.kv_cache_dtype!r}",
                           f"remove kv_cache_dtype or set it to {pinned}")
            return False
    return True


def _quantization(method: str, platform: str) -> dict:
    methods = vllm_flags()["quantization"]
    return methods.get(platform, methods["default"]).get(method, {})


def pooling_args(task: str, version: str) -> list[str]:
    for entry in vllm_flags()["pooling"]:
        if version_tuple(version) >= version_tuple(entry["since"]):
            return list(entry[task])
    return []


def vllm_args(draft: Draft, model: str, names: list[str], inst: dict, platform: str,
              listen: str = "0.0.0.0") -> list[str]:
    spec = draft.spec
    args = [model, "--host", listen, "--port", str(inst["port"]), "--served-model-name", *names,
            "--tensor-parallel-size", str(spec.tensor_parallel_size), "--max-model-len", str(draft.max_model_len),
            "--max-num-seqs", str(draft.max_num_seqs)]
    if spec.api_server_count:
        args += ["--api-server-count", str(spec.api_server_count)]
    if draft.max_batched:
        args += ["--max-num-batched-tokens", str(draft.max_batched)]
    if platform != "cpu":
        args += ["--gpu-memory-utilization", str(inst["fraction"])]
    if spec.dtype:
        args += ["--dtype", spec.dtype]
    quantization = []
    if spec.quantization:
        method = _quantization(spec.quantization, platform)
        quantization = list(method["args"])
        if not spec.dtype and method.get("dtype"):
            args += ["--dtype", method["dtype"]]
    if spec.kv_cache_dtype and "--kv-cache-dtype" not in quantization:
        args += ["--kv-cache-dtype", spec.kv_cache_dtype]
    args += quantization
    if draft.task in POOLING_TASKS:
        args += pooling_args(draft.task, draft.vllm_version)
    return args + [str(a) for a in spec.extra_args or []]


def card_access(platform: str, group: list[int], ctx: EmitContext, unlimited_memlock: bool = False) -> dict:
    """How an instance's cards reach its container, as each vendor documents it: the runtime, the variables it
    reads, the device nodes and mounts, and the container settings the vendor asks for."""
    runtime = container_access()["runtimes"].get(platform)
    access = {"env": {}, "runtime": None, "capabilities": [], "ipc_mode": None, "devices": [], "volumes": [],
              "ulimits": []}
    if platform == "gaudi":
        # seed 004's container: --runtime=habana --cap-add=sys_nice --net=host --ipc=host. The habana runtime
        # mounts the cards HABANA_VISIBLE_DEVICES names (indices; unset means all of them) in every version whose
        # source is published (HabanaAI/habana-container-runtime up to v1.16.0); the framework inside picks its
        # cards by HABANA_VISIBLE_MODULES (module ids), which Habana's current guide also has the runtime honour.
        # Both, naming the same cards, are right for every version.
        access.update(runtime=runtime, capabilities=["sys_nice"], ipc_mode="host")
        access["env"]["HABANA_VISIBLE_DEVICES"] = ",".join(map(str, sorted(group)))
        access["env"]["HABANA_VISIBLE_MODULES"] = ",".join(str(m) for m in sorted(ctx.cards.module_id(d)
                                                                                 for d in group))
    elif platform == "nvidia":
        # NVIDIA Container Toolkit: --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=<indices>
        access.update(runtime=runtime, ipc_mode="host")
        access["env"]["NVIDIA_VISIBLE_DEVICES"] = ",".join(map(str, group))
    elif platform == "ascend":
        # The container sees only its cards, numbered from 0 inside: ASCEND_RT_VISIBLE_DEVICES counts those.
        access["env"]["ASCEND_RT_VISIBLE_DEVICES"] = ",".join(map(str, range(len(group))))
        if ctx.ascend_mode == "runtime":
            # Ascend Docker Runtime: it mounts the cards ASCEND_VISIBLE_DEVICES names, the managers and the files
            # of its base.list (driver lib64, dcmi, npu-smi), not version.info nor ascend_install.info
            # (Ascend/mind-cluster runtime/process/process.go; the installer's base.list)
            access["runtime"] = runtime
            access["env"]["ASCEND_VISIBLE_DEVICES"] = ",".join(map(str, group))
            access["volumes"] += [f"{p}:{p}:ro" for p in container_access()["ascend_runtime_extra_paths"]]
        else:
            # vllm-ascend's documented container (seed 002): each planned card, the managers, the driver files
            access["devices"] = [f"/dev/davinci{i}:/dev/davinci{i}" for i in group]
            access["devices"] += [f"{p}:{p}" for p in ctx.ascend_paths if p.startswith("/dev/")]
            access["volumes"] += [f"{p}:{p}:ro" for p in ctx.ascend_paths if not p.startswith("/dev/")]
        if len(group) > 1:  # HCCL between the cards reads the card addresses (seed 002)
            access["volumes"] += [f"{p}:{p}:ro" for p in container_access()["ascend_multi_card_paths"]]
    if platform == "gaudi" and unlimited_memlock:
        # seed 004's big-model container: --cap-add SYS_PTRACE --cap-add=CAP_IPC_LOCK --ulimit memlock=-1:-1
        access["capabilities"] += ["sys_ptrace", "ipc_lock"]
        access["ulimits"] = ["memlock:-1:-1"]
    return access


def container_spec(name, draft: Draft, env, model, warmup_dir, args, access: dict) -> dict:
    """The instance's container, in the terms of community.docker.docker_container (the serve stage passes it
    as is) and from which the docker run argv is written."""
    spec = draft.spec
    entrypoint, command = ["vllm"], ["serve", *args]
    if spec.skip_warmup_when_cached and warmup_dir:
        # seed 004's -s, decided when the container starts: a cache that already holds recipes makes warming up
        # again needless
        entrypoint = ["/bin/sh", "-c", f'if [ -n "$(ls -A {warmup_dir} 2>/dev/null)" ]; then export '
                                       'VLLM_SKIP_WARMUP=true; fi; exec vllm serve "$@"', "vllm"]
        command = list(args)
    container = {
        "name": f"inferfleet-{name}", "image": draft.image, "entrypoint": entrypoint, "command": command,
        "env": dict(sorted(env.items())), "network_mode": "host", "ipc_mode": access["ipc_mode"],
        "runtime": access["runtime"], "capabilities": access["capabilities"], "devices": access["devices"],
        "volumes": list(access["volumes"]), "ulimits": access["ulimits"],
        "restart_policy": serving_default("restart_policy"),
        "labels": {"inferfleet.service": spec.name, "inferfleet.instance": name},
    }
    if model.startswith("/"):
        container["volumes"].append(f"{model}:{model}:ro")
    if spec.quant_config:
        container["volumes"].append(f"{spec.quant_config}:{spec.quant_config}:ro")
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
    for ulimit in container["ulimits"]:
        name, soft, hard = ulimit.split(":")
        argv += ["--ulimit", f"{name}={soft}:{hard}"]
    for device in container["devices"]:
        argv += ["--device", device]
    for key, value in container["env"].items():
        argv += ["-e", f"{key}={value}"]
    for volume in container["volumes"]:
        argv += ["-v", volume]
    # docker run --entrypoint takes one word; the rest of a longer entrypoint goes before the command
    return argv + ["--entrypoint", container["entrypoint"][0], container["image"], *container["entrypoint"][1:],
                   *container["command"]]


# --- the saved plan ---------------------------------------------------------------------------------------------
def plan_inputs(host: HostInput, drafts: list[Draft]) -> dict:
    """Hashes of what a host's plan was computed from: its settings (with the model configs and env files they
    name) and its cards. A saved plan is applied only while both are unchanged."""
    settings = _canonical({k: v for k, v in host.vars.items() if k in schema.SETTINGS and k not in _RUN_SETTINGS
                           and k not in schema.SECRET_SETTINGS})  # a token changes no plan, nor does its hash
    files = {d.spec.name: [d.config, _file_text(d.spec.env_file, host.base_dir)] for d in drafts}
    discovered = host.discovered or {}
    cards = {"count": discovered.get("count"), "model": discovered.get("model"),
             "memory_total_mib": discovered.get("memory_total_mib"), "distribution": discovered.get("distribution"),
             "devices": [{k: d.get(k) for k in ("index", "module_id", "held", "numa_node")}
                         for d in discovered.get("devices", [])]} if discovered else "declared"
    keyed = sorted(host.vars.get("inferfleet_api_keys") or {})  # which services need a key changes the plan
    return {"settings": digest([settings, files, keyed])[:16], "cards": digest(cards)[:16]}


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
