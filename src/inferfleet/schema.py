"""The one schema of inferfleet's settings: every inventory variable and every service key, with its type,
default, allowed values, description and example.

Everything that judges or documents a setting reads it from here:
- `validate_host` (the validation play, `inferfleet plan`, `inferfleet up` and the planner all call it);
- the roles' `meta/argument_specs.yml` options, `docs/settings.md` and `docs/service.schema.json`, written by
  `python -m inferfleet.schema --write` and checked against this file by the unit tests.

Types are checked by pydantic (strict: YAML's `'8'` is not the number 8), rules a type cannot state (paths,
image references, names) by the annotated types below. Each refusal becomes a `Problem` naming host, field,
what was given and a fix.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

PLATFORMS = ("gaudi", "ascend", "nvidia", "cpu")
TASKS = ("generate", "embed", "rerank")
POOLING_TASKS = ("embed", "rerank")
GAUDI_STACKS = ("vllm-fork", "vllm-gaudi")
# vLLM's --dtype and --kv-cache-dtype choices (fp8_inc is Gaudi's Intel Neural Compressor KV cache)
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
GOVERNORS = ("performance", "powersave", "ondemand", "conservative", "schedutil", "userspace")
NAME_MAX = 255  # bytes in one path component (Linux NAME_MAX)

# Prefixes whose variables this schema owns: a name with one of them that is not declared is a typo.
OWNED_PREFIXES = ("inferfleet_", "host_tuning_", "docker_engine_", "accel_runtime_", "images_", "models_",
                  "vllm_service_", "preflight_", "fabric_", "vllm_bench_")
# What the stages set at run time under those prefixes, and which role reads it: not settings.
RUNTIME_NAMES = {
    "inferfleet_accel": "fact: the cards preflight discovered (accel_facts); the planner reads it",
    "inferfleet_plan": "the plan of an older version's runs (now a registered result, not a fact)",
    "inferfleet_status": "fact: the rows of `inferfleet status` (playbooks/status.yml)",
    "images_sources": "fact: where each image comes from; the mirror filling reads every host's",
    "accel_runtime_docker_runtimes": "fact: the vendor runtime for daemon.json; docker_engine merges it",
    "accel_runtime_default_runtime": "fact: the vendor runtime as default (accel_runtime_set_default); "
                                     "docker_engine reads it",
    "host_tuning_report": "fact: the tune stage's verification table",
    "host_tuning_reboot_required": "fact: the kernel command line waits for a reboot",
    "vllm_service_ready": "result: the readiness of every instance",
    "fabric_report": "fact: the fabric stage's rows (test, size, ranks, measured, threshold, status)",
    "vllm_bench_report": "fact: the bench stage's results and verdicts of the host's services",
}


class Ansible:
    """Annotated metadata: the argument-spec type when it differs from the Python one (e.g. path)."""

    def __init__(self, type: str):  # noqa: A002 - the argument spec's own key
        self.type = type


# --- value rules ------------------------------------------------------------------------------------------------
def _rule(pattern: str, what: str):
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(what)
        return value
    return AfterValidator(check)


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    for part in value.split("/"):
        if len(part.encode()) > NAME_MAX:
            raise ValueError(f"has a path component of {len(part.encode())} bytes; Linux allows {NAME_MAX}")
    if "\x00" in value or "\n" in value:
        raise ValueError("must not contain NUL or newline characters")
    return value


def _whole_number_text(value):
    """`-e key=15000` arrives as a string: accept plain digits as the number they spell."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return value


def _bool_text(value):
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    return value


# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest]
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = (rf"(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::[\w][\w.-]{{0,127}})?"
                   r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,})?")
IDLE_STATE_NAME = r"POLL|C\d+[A-Z]*(?:-[A-Z]+)?(?:_ACPI)?|WFI|cpu-sleep-\d+|cluster-sleep-\d+"
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
SERVICE_NAME = r"[a-z0-9][a-z0-9_.-]{0,62}"
HTTP_URL = r"https?://[^\s/]+(?:/\S*)?"

WholeNumber = Annotated[StrictInt, BeforeValidator(_whole_number_text)]
Bool = Annotated[StrictBool, BeforeValidator(_bool_text)]
Number = StrictInt | Annotated[StrictFloat, AllowInfNan(False)]
AbsolutePath = Annotated[StrictStr, AfterValidator(_absolute_path), Ansible("path")]
ImageRef = Annotated[StrictStr, _rule(IMAGE_REFERENCE, "is not an image reference ([registry/]name[:tag][@digest], "
                                                       "no spaces, lower-case path)")]
Url = Annotated[StrictStr, _rule(f"(?:{HTTP_URL})?", "is not an http(s) URL")]
HostPort = Annotated[StrictStr, _rule(r"[A-Za-z0-9.\-\[\]:]+(?::\d{1,5})?", "is not HOST[:PORT] (no scheme)")]
EnvName = Annotated[StrictStr, _rule(ENV_NAME, "is not an environment variable name")]
EnvValue = StrictStr | StrictInt | StrictFloat | StrictBool | None
Version = Annotated[StrictStr, _rule(r"v?\d+\.\d+(\.\d+)?([.+-]?[A-Za-z0-9.]+)?", "is not a version (e.g. 0.9.0)")]
# A message size as the collective tests take it: bytes, or a number with K, M or G (powers of 1024, as
# run_hccl_demo.py's parse_size and nccl-tests' parsesize read them)
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def size_bytes(value) -> int:
    """256m -> 268435456; a whole number is bytes already."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([KkMmGg]?)[Bb]?\s*", str(value))
    if not match:
        raise ValueError("is not a size (bytes, or a number with K, M or G, e.g. 256M)")
    return int(match[1]) * SIZE_UNITS[match[2].lower()]


def _size_rule(value):
    if isinstance(value, bool) or size_bytes(value) < 1:
        raise ValueError("must be at least 1 byte")
    return value


ByteSize = Annotated[StrictStr | StrictInt, AfterValidator(_size_rule)]
TokenRange = Annotated[list[Annotated[StrictInt, Field(ge=1)]], Field(min_length=2, max_length=2)]


def setting(default: Any = None, description: str = "", example: Any = None, fix: str = "",
            templated: bool = False, **constraints):
    """A declared setting: its default, one-line description, an example and the fix for a bad value.
    templated: the role's default is a Jinja expression (documented, not checked against the role)."""
    extra = {k: v for k, v in (("example", example), ("fix", fix), ("templated", templated or None)) if v is not None
             and v != ""}
    return Field(default=default, description=description, json_schema_extra=extra or None, **constraints)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, protected_namespaces=())


# --- the service spec -------------------------------------------------------------------------------------------
class FrontDoor(Strict):
    """One port in front of all the service's instances on the host (HAProxy): it spreads requests over the
    instances that pass their health check and routes by the request's model when the service has several."""

    port: StrictInt = setting(..., "Port clients use; no instance of the host may use it.", 8100, ge=1, le=65535)
    balance: Literal["leastconn", "roundrobin", "random"] = setting(
        "leastconn", "How requests are spread over the instances (HAProxy's balance algorithm).", "roundrobin")
    telemetry_headers: StrictBool = setting(
        True, "Add X-Inferfleet-Instance (host/instance) and X-Inferfleet-Model (model path) to every response.",
        False)
    certificate: StrictStr | None = setting(
        None, "Serve HTTPS with this PEM file on the controller (the certificate, its chain and its private key; "
              "relative to the inventory).", "tls/inference.example.com.pem", min_length=1)


class FleetFrontDoor(FrontDoor):
    """A front door on this host (a gateway) for a service other hosts serve: it spreads requests over those
    hosts' front doors of the service, or their instances."""

    service: Annotated[StrictStr, _rule(SERVICE_NAME, "must be a service name")] = setting(
        ..., "The service (its name in the serving hosts' inferfleet_services).", "bge-rerank")


class Service(Strict):
    """One entry of inferfleet_services: a model served by one or more vLLM instances on a host."""

    name: Annotated[StrictStr, _rule(SERVICE_NAME, "must be 1-63 lower-case letters, digits, '.', '_' or '-', "
                                                   "starting with a letter or digit")] = setting(
        ..., "Service name, unique per host; names the containers and the warmup cache.", "qwen2-72b")
    model: StrictStr | None = setting(None, "Model path on the host (or a hub id the image can fetch).",
                                      "/models/Qwen2-72B-Instruct", min_length=1)
    models: list[StrictStr] | None = setting(
        None, "Several pooling models sharing the service's cards, one instance each.",
        ["/models/gte-modernbert-base", "/models/bge-m3"], min_length=1)
    served_model_name: StrictStr | None = setting(None, "Name clients use in requests (default: the service name; "
                                                        "the model directory's name with models).", "Qwen2-72B",
                                                  min_length=1)
    task: Literal["generate", "embed", "rerank"] | None = setting(
        None, "What the model does; derived from model_config's architectures when left out.", "embed")
    devices: list[Annotated[StrictInt, Field(ge=0)]] | None = setting(
        None, "Card indices the service runs on (all its instances).", [0, 1, 2, 3], min_length=1)
    device_count: StrictInt | None = setting(None, "Cards to pick from the free ones when devices is not given "
                                                   "(default: tensor_parallel_size).", 2, ge=1)
    tensor_parallel_size: StrictInt = setting(1, "Cards per instance (vLLM --tensor-parallel-size).", 4, ge=1)
    replicas: StrictInt = setting(1, "Instances per card group.", 2, ge=1)
    port: StrictInt = setting(..., "Port of the first instance; the next instances take the next ports.", 8000,
                              ge=1, le=65535)
    front_door: FrontDoor | None = setting(
        None, "One port in front of the service's instances on the host, with health checks and telemetry headers.",
        {"port": 8100})
    api_server_count: StrictInt | None = setting(
        None, "HTTP API server processes of each instance (vLLM --api-server-count; default 1).", 2, ge=1)
    max_model_len: StrictInt | None = setting(None, "Context length (default: the model's limit, else 2048).",
                                              8192, ge=1)
    max_num_seqs: StrictInt | None = setting(None, "Concurrent sequences per instance (default: see "
                                                   "serving_defaults.yml).", 64, ge=1)
    max_num_batched_tokens: StrictInt | None = setting(None, "Tokens per scheduler step (default: max_model_len, at "
                                                             "least 2048 for generate).", 8192, ge=1)
    gpu_memory_utilization: Number | None = setting(None, "Fraction of each card's memory for this instance "
                                                          "(default 0.9, or the shared split).", 0.9, gt=0, le=1)
    dtype: Literal[DTYPES] | None = setting(None, "Weights and activations dtype (vLLM --dtype).", "bfloat16")
    kv_cache_dtype: Literal[KV_CACHE_DTYPES] | None = setting(None, "KV cache dtype (vLLM --kv-cache-dtype).",
                                                                "fp8")
    image: ImageRef | None = setting(None, "Container image (default: inferfleet_images[platform]).",
                                     "vllm/vllm-openai:v0.11.0")
    env_preset: StrictStr | None = setting(None, "Environment preset of the platform (presets.yml: default, "
                                                 "performance).", "performance")
    env_file: StrictStr | dict[EnvName, EnvValue] | None = setting(
        None, "YAML/JSON file of environment variables on the controller (or the mapping); after the preset.",
        "env/qwen.json")
    env: dict[EnvName, EnvValue] | None = setting(None, "Environment variables, applied last.",
                                                  {"PT_HPU_LAZY_MODE": 0})
    extra_args: list[StrictStr | StrictInt | StrictFloat] | None = setting(
        None, "More vLLM arguments, appended as given.", ["--enforce-eager"])
    warmup_cache: StrictBool | AbsolutePath | None = setting(
        None, "Gaudi: keep HPU graphs in a warmup cache (true: under inferfleet_warmup_cache_dir; or a path).",
        True)
    startup_timeout: StrictInt | None = setting(None, "Seconds an instance may take to become ready (default: "
                                                      "serving_defaults.yml).", 3600, ge=1)
    config_source: StrictStr | dict | None = setting(
        None, "The model's config.json: a path on the controller (relative to the inventory) or the mapping.",
        "model_configs/Qwen2-72B-Instruct.json", alias="model_config")
    weights_gib: Number | None = setting(None, "Size of the weights in GiB when the planner cannot read it.", 136,
                                         gt=0)
    share_devices: StrictBool = setting(False, "Allow other services on this service's cards; every sharer sets it.",
                                        True)
    vllm_version: Version | None = setting(
        None, "vLLM version of the service's image (default: inferfleet_vllm_versions, or the tag of vLLM's and "
              "vllm-ascend's images); its flags depend on it.", "0.9.0")
    quantization: Literal["fp8", "awq", "gptq"] | None = setting(
        None, "Quantized weights (vLLM --quantization); on Gaudi fp8 runs through Intel Neural Compressor and "
              "needs quant_config.", "fp8")
    quant_config: AbsolutePath | None = setting(
        None, "Gaudi fp8: the Intel Neural Compressor quantization config (QUANT_CONFIG) on the host.",
        "/models/DeepSeek-R1-G2/inc/quant_config.json")
    input_len: TokenRange | None = setting(
        None, "Gaudi: the range of prompt lengths [min, max] the HPU buckets cover (seed 004's -i).", [800, 1024])
    output_len: TokenRange | None = setting(
        None, "Gaudi: the range of output lengths [min, max] the decode buckets cover (seed 004's -o).", [400, 512])
    hot_buckets: TokenRange | None = setting(
        None, "Gaudi: warm up only [max_bs, max_seq], the concurrency and prompt length seen most (seed 004's -r).",
        [8, 24000])
    skip_warmup_when_cached: StrictBool = setting(
        False, "Gaudi: skip the warmup when the warmup cache already holds recipes (seed 004's -s).", True)
    unlimited_memlock: StrictBool = setting(
        False, "Gaudi big models: the container gets SYS_PTRACE, IPC_LOCK and an unlimited memlock ulimit (seed 004, "
               "DeepSeek-R1).", True)


class ModelConfig(BaseModel):
    """The fields of a model's config.json the planner computes with; the rest is kept as given."""

    model_config = ConfigDict(extra="allow", strict=True, protected_namespaces=())

    architectures: list[StrictStr] | None = None
    hidden_size: StrictInt | None = Field(None, ge=1)
    num_attention_heads: StrictInt | None = Field(None, ge=1)
    num_key_value_heads: StrictInt | None = Field(None, ge=1)
    num_hidden_layers: StrictInt | None = Field(None, ge=1)
    head_dim: StrictInt | None = Field(None, ge=1)
    vocab_size: StrictInt | None = Field(None, ge=1)
    intermediate_size: StrictInt | None = Field(None, ge=1)
    max_position_embeddings: StrictInt | None = Field(None, ge=1)
    n_positions: StrictInt | None = Field(None, ge=1)
    max_sequence_length: StrictInt | None = Field(None, ge=1)
    seq_length: StrictInt | None = Field(None, ge=1)
    torch_dtype: StrictStr | None = None
    tie_word_embeddings: StrictBool | None = None
    rope_scaling: dict | None = None
    text_config: ModelConfig | None = None
    llm_config: ModelConfig | None = None
    language_config: ModelConfig | None = None


# --- host settings, by the stage that reads them ----------------------------------------------------------------
class Accelerator(Strict):
    """The cards a host should have."""

    model: StrictStr = setting(..., "Card model as the vendor tool prints it.", "HL-225", min_length=1)
    count: StrictInt = setting(..., "Number of cards in the host.", 8, ge=1, le=128)
    memory_gib: Number = setting(..., "Memory of one card in GiB.", 96, gt=0)


def _model_source(value: str) -> str:
    from .models import parse_source

    if not value.startswith("/"):
        parse_source(value)
    elif len(value) > 1:
        _absolute_path(value)
    return value


# a source, or (the older form) a directory on the controller
ModelSourceText = Annotated[StrictStr, AfterValidator(_model_source)]


class ModelSource(Strict):
    """Where a model directory comes from: its source, and which revision and files of it."""

    source: ModelSourceText = setting(..., "hf://ORG/NAME[@REVISION], modelscope://ORG/NAME[@REVISION], "
                                           "git+https://HOST/PATH[@REF] or file:///DIR on the controller.",
                                      "hf://Qwen/Qwen2.5-7B-Instruct")
    revision: StrictStr | None = setting(None, "Branch, tag or commit (pin a commit for repeatable fleets); "
                                               "overrides an @REVISION in the source.",
                                         "a09a35458c702b33eeacc393d103063234e8bc28", min_length=1)
    allow_patterns: list[StrictStr] | None = setting(None, "Only the files matching these (fnmatch, as the hub "
                                                           "clients read them).", ["*.safetensors", "*.json"])
    ignore_patterns: list[StrictStr] | None = setting(None, "Leave out the files matching these.", ["*.pth"])

    @model_validator(mode="after")
    def _patterns_fit(self):
        from .models import parse_source

        parse_source(self.source, self.revision, self.allow_patterns or (), self.ignore_patterns or ())
        return self


class RegistryCredential(Strict):
    registry: StrictStr = Field(..., min_length=1)
    username: StrictStr = Field(..., min_length=1)
    password: StrictStr = Field(..., min_length=1)


class RehearsalPlanning(Strict):
    """Production's model settings, for the planner of a rehearsal."""

    inferfleet_models: dict[StrictStr, Any] = setting({}, "Production's inferfleet_models.", {})
    inferfleet_model_cache_dir: AbsolutePath | None = setting(None, "Production's fleet cache of models.",
                                                              "/srv/inferfleet/models")


class Inventory(Strict):
    """inferfleet_*: what the host is and what it serves."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, protected_namespaces=(), title="inferfleet")

    inferfleet_platform: Literal[PLATFORMS] = setting(
        ..., "Accelerator family of the host; must agree with its inventory group.", "gaudi",
        fix="set inferfleet_platform to one of gaudi, ascend, nvidia, cpu in host_vars or group_vars")
    inferfleet_accelerator: Accelerator | None = setting(
        None, "The cards the host should have (model, count, memory_gib); required unless the platform is cpu.",
        {"model": "HL-225", "count": 8, "memory_gib": 96},
        fix="describe the cards, e.g. inferfleet_accelerator: {model: HL-225, count: 8, memory_gib: 96}")
    inferfleet_services: list[Any] = setting([], "The host's model services (see docs/service.schema.json).", [])
    inferfleet_serving: Bool = setting(True, "Plan and serve inferfleet_services; false runs every other stage "
                                             "only (e.g. a fleet without serving images or models).", False)
    inferfleet_images: dict[Literal[PLATFORMS], ImageRef | Literal[""]] = setting(
        {}, "The vLLM image of each platform (\"\" for none); a service's image overrides it.",
        {"nvidia": "vllm/vllm-openai:v0.11.0"})
    inferfleet_image: ImageRef | None = setting(None, "One image for the host when inferfleet_images has none for "
                                                      "its platform.", "vllm/vllm-openai:v0.11.0")
    inferfleet_vllm_versions: dict[Literal[PLATFORMS], Version] = setting(
        {}, "vLLM version of each platform's image in inferfleet_images (the flags vLLM accepts depend on it).",
        {"gaudi": "0.9.0"})
    inferfleet_gaudi_stack: Literal[GAUDI_STACKS] = setting(
        "vllm-fork", "Gaudi software stack; its environment variable names differ.", "vllm-gaudi")
    inferfleet_env: dict[EnvName, EnvValue] = setting(
        {}, "Environment for every service of the host (proxies, HF_ENDPOINT), after the preset.",
        {"HF_ENDPOINT": "https://hf-mirror.example.com"})
    inferfleet_warmup_cache_dir: AbsolutePath = setting("/data/warmup_cache", "Where Gaudi warmup caches live.",
                                                        "/data/warmup_cache")
    inferfleet_api_keys: dict[Annotated[StrictStr, _rule(SERVICE_NAME, "must be a service name")],
                              Annotated[StrictStr, Field(min_length=1)]] = setting(
        {}, "API key per service name: clients send `Authorization: Bearer KEY` (vLLM --api-key; the front door "
            "checks it too). Keep it in a vault file.", {"bge-rerank": "sk-xxxxxxxx"})
    inferfleet_fleet_front_doors: list[FleetFrontDoor] = setting(
        [], "Front doors this host runs for services of other hosts (one port for the fleet's instances of each).",
        [{"service": "bge-rerank", "port": 9000}])
    inferfleet_front_door_image: ImageRef | Literal[""] = setting(
        "docker.io/library/haproxy:3.0", "The HAProxy image of the services' front doors.", "haproxy:3.0")
    inferfleet_front_door_dir: AbsolutePath = setting(
        "/etc/inferfleet/front-door", "Where each front door's configuration and admin socket live on the host.",
        "/etc/inferfleet/front-door")
    inferfleet_models: dict[AbsolutePath, ModelSourceText | ModelSource] = setting(
        {}, "Where each model directory the services name comes from: host path -> a source (hf://, "
            "modelscope://, git+https://, file:// on the controller) or {source, revision, allow_patterns, "
            "ignore_patterns}.",
        {"/models/Qwen2-72B-Instruct": {"source": "modelscope://Qwen/Qwen2-72B-Instruct",
                                        "allow_patterns": ["*.safetensors", "*.json", "*.txt"]}},
        fix="write inferfleet_models as {/path/on/host: hf://ORG/NAME@REVISION}")
    inferfleet_model_cache_dir: AbsolutePath | None = setting(
        None, "The controller's fleet cache of models, each fetched from its hub once (default: "
              "<project>/.cache/model-cache); a bundle made by `inferfleet models pull`.", "/srv/inferfleet/models")
    inferfleet_models_offline: Bool = setting(False, "Ask no hub: every model comes from the fleet cache (an "
                                                     "air-gapped fleet with a bundle).", True)
    inferfleet_hf_endpoint: Url = setting("", "Hugging Face Hub address (a mirror: HF_ENDPOINT); empty: "
                                              "huggingface.co.", "https://hf-mirror.com")
    inferfleet_hf_token: StrictStr | None = setting(None, "Hugging Face token for gated models; keep it in a "
                                                          "vault file.", "hf_xxxxxxxx", min_length=1)
    inferfleet_modelscope_endpoint: Url = setting("", "ModelScope address (MODELSCOPE_ENDPOINT); empty: "
                                                      "modelscope.cn.", "https://www.modelscope.cn")
    inferfleet_modelscope_token: StrictStr | None = setting(None, "ModelScope token (MODELSCOPE_API_TOKEN); keep "
                                                                  "it in a vault file.", "ms-xxxxxxxx",
                                                            min_length=1)
    inferfleet_registry_mirror: Url = setting(
        "", "LAN registry the images stage copies each image into once and every host pulls from.",
        "http://10.0.0.5:5000", fix="write it as http://HOST:PORT or https://HOST")
    inferfleet_docker_hub_mirror: Url = setting(
        "", "Docker Hub pull-through cache (daemon.json registry-mirrors).", "https://mirror.example.com",
        fix="write it as http://HOST:PORT or https://HOST")
    inferfleet_insecure_registries: list[HostPort] = setting(
        [], "Registries reached over plain HTTP (daemon.json insecure-registries).", ["10.0.0.5:5000"],
        fix="list registries as HOST:PORT without a scheme")
    inferfleet_registry_credentials: list[RegistryCredential] = setting(
        [], "Registry logins [{registry, username, password}]; keep them in a vault file.", [])
    inferfleet_preflight_fail_fast: Bool = setting(True, "Stop every host when one fails validation or preflight.",
                                                   True)
    inferfleet_simulated: Bool = setting(False, "The host's accelerators are simulated (sandbox).", False)
    inferfleet_run_dir: AbsolutePath | None = setting(None, "Where a run keeps its saved plan and log (the CLI sets "
                                                            "it).", "/srv/inferfleet/.cache/runs/x")
    inferfleet_results_dir: AbsolutePath | None = setting(
        None, "Where the controller keeps measured results (fabric, bench), one JSON file per run (default: "
              "<project>/.cache/results).", "/srv/inferfleet/results")
    inferfleet_saved_plan: AbsolutePath | None = setting(
        None, "A plan saved earlier (inferfleet plan --save); the run applies it and refuses if it is stale.",
        "/srv/inferfleet/plan.json")
    # written by `inferfleet sandbox up` into the sandbox inventory
    inferfleet_sandbox: StrictStr | None = setting(None, "Sandbox name (sandbox inventories only).", "inferfleet")
    inferfleet_sandbox_profile: StrictStr | None = setting(None, "Simulated hardware profile (sandbox only).",
                                                           "gaudi2")
    inferfleet_sandbox_vllm_image: StrictStr | None = setting(None, "The sandbox's vLLM CPU image (sandbox only).",
                                                              "172.30.0.1:5000/inferfleet/vllm-cpu:0.32.0")
    inferfleet_sandbox_models_dir: StrictStr | None = setting(None, "The sandbox's stand-in models on the "
                                                                    "controller (sandbox only).", "/srv/models")
    inferfleet_sandbox_hub: StrictStr | None = setting(None, "The sandbox's local model hub (sandbox only).",
                                                       "http://127.0.0.1:5002")
    inferfleet_sandbox_fabric_dir: StrictStr | None = setting(
        None, "The SIMULATED collective-test stand-ins on the controller (sandbox only).",
        "/srv/inferfleet/src/inferfleet/sandbox/fabric")
    inferfleet_sandbox_mirror: StrictStr | None = setting(None, "The sandbox registry as a mirror (sandbox only).",
                                                          "http://172.30.0.1:5000")
    inferfleet_sandbox_registry: StrictStr | None = setting(None, "The sandbox registry's HOST:PORT (sandbox only).",
                                                            "172.30.0.1:5000")
    # passed by `inferfleet rehearse` as an extra variable
    inferfleet_rehearsal_addresses: dict[StrictStr, StrictStr] | None = setting(
        None, "Each host's SIMULATED stand-in during a rehearsal (inferfleet rehearse sets it; ansible_host follows).",
        {"gaudi2-node01": "10.213.1.10"})
    inferfleet_rehearsal_planning: RehearsalPlanning | None = setting(
        None, "What the planner reads in a rehearsal in place of the rehearsal's model settings, whose models are "
              "stand-ins: production's (inferfleet rehearse sets it).",
        {"inferfleet_models": {}, "inferfleet_model_cache_dir": "/srv/inferfleet/.cache/model-cache"})


class Preflight(Strict):
    """Role preflight."""

    preflight_supported_os_families: list[StrictStr] = setting(
        ["Debian", "RedHat", "openEuler"], "OS families (ansible_facts.os_family) inferfleet supports.")
    preflight_memory_tolerance: Number = setting(0.05, "Relative difference allowed between reported and declared "
                                                       "card memory.", ge=0, le=1)
    preflight_check_accelerators: Bool = setting(True, "Read the accelerators with the vendor tool and compare them "
                                                       "with the inventory.")


class HostTuning(Strict):
    """Role host_tuning (stage tune)."""

    host_tuning_governor: Literal[GOVERNORS] | None = setting(
        "performance", "CPU frequency governor, now and at boot; null leaves it alone.", "performance")
    host_tuning_governor_on_cmdline: Bool = setting(True, "Also persist the governor as cpufreq.default_governor on "
                                                          "the kernel command line.")
    host_tuning_disable_idle_states: list[Annotated[StrictStr, _rule(
        IDLE_STATE_NAME, "is not an idle state name (as in /sys/devices/system/cpu/cpu0/cpuidle/state*/name)")]] = \
        setting(["C1E", "C6"], "Idle states to disable by name; a state the CPU lacks is reported, not an error.",
                ["C1E", "C6"], fix="use names as in /sys/devices/system/cpu/cpu0/cpuidle/state*/name, e.g. C1E, C6")
    host_tuning_intel_idle_max_cstate: Annotated[WholeNumber, Field(ge=0)] | None = setting(
        0, "intel_idle.max_cstate on Intel CPUs' kernel command line; null leaves it out.", 0)
    host_tuning_hugepages: Annotated[WholeNumber, Field(ge=0)] | None = setting(
        None, "Number of 2 MiB hugepages (vm.nr_hugepages); null leaves it alone.", 15000)
    host_tuning_numa_balancing: Bool | None = setting(False, "kernel.numa_balancing; null leaves it alone.", False)
    host_tuning_kernel_cmdline: dict[Annotated[StrictStr, _rule(r"[^\s=\"]+", "is not a kernel argument name (the "
                                                                              "part before '=')")],
                                     StrictStr | StrictInt | None] = setting(
        {}, "More kernel arguments, key: value (null value: a bare flag).", {"intel_iommu": "on", "iommu": "pt"})
    host_tuning_kernel_cmdline_remove: list[StrictStr] = setting([], "Kernel argument keys to remove.", ["quiet"])
    host_tuning_grub_defaults: AbsolutePath = setting("/etc/default/grub", "GRUB defaults file.")
    host_tuning_grub_variable: StrictStr = setting("GRUB_CMDLINE_LINUX_DEFAULT", "Variable of the GRUB defaults "
                                                                                 "file holding the arguments.")
    host_tuning_grub_mkconfig_command: StrictStr = setting("", "Command regenerating the boot loader configuration; "
                                                               "empty uses the OS family's usual one.")
    host_tuning_reboot: Literal["never", "if_needed"] = setting(
        "never", "never: report that a reboot is needed; if_needed: reboot when the command line changed.",
        "if_needed")
    host_tuning_reboot_timeout: Annotated[WholeNumber, Field(ge=1)] = setting(900, "Seconds to wait for a host to "
                                                                                   "come back.")
    host_tuning_sysctl_file: AbsolutePath = setting("/etc/sysctl.d/90-inferfleet.conf", "sysctl.d file holding our "
                                                                                        "kernel settings.")
    host_tuning_boot_unit: Bool = setting(True, "Install a systemd unit re-applying governor and idle states at boot.")
    host_tuning_verify_strict: Bool = setting(True, "Fail when a setting is not in effect after tuning (short "
                                                    "hugepages only warn).")


class DockerEngine(Strict):
    """Role docker_engine (stage docker)."""

    docker_engine_source: Literal["distro", "upstream"] = setting(
        "distro", "distro: the OS's own package (docker.io, openEuler docker); upstream: Docker's docker-ce.",
        "upstream")
    docker_engine_version: StrictStr = setting("", "Package version pin as the package manager spells it; empty for "
                                                   "the latest.", "20.10.24+dfsg1-1+deb12u1+b6")
    docker_engine_distro_packages: dict[StrictStr, list[StrictStr]] = setting(
        {"Debian": ["docker.io"], "openEuler": ["docker"]}, "Distribution packages per OS family.")
    docker_engine_python_packages: list[StrictStr] = setting(["python3-requests"], "Python libraries the "
                                                             "community.docker modules need on the host.")
    docker_engine_upstream_packages: list[StrictStr] = setting(
        ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"],
        "Packages from Docker's repository.")
    docker_engine_conflicting_packages: list[StrictStr] = setting(
        ["docker.io", "docker-doc", "docker-compose", "podman-docker", "containerd", "runc"],
        "Packages removed before docker-ce (removing them keeps /var/lib/docker).")
    docker_engine_apt_repo_url: StrictStr = setting(None, "Docker's apt repository (or a mirror).", templated=True)
    docker_engine_apt_gpg_key_url: StrictStr = setting(None, "Its signing key.", templated=True)
    docker_engine_apt_channel: StrictStr = setting("stable", "Repository channel.")
    docker_engine_rpm_repo_url: StrictStr = setting("https://download.docker.com/linux/rhel/docker-ce.repo",
                                                    "URL of docker-ce.repo (or a mirror's).")
    docker_engine_rpm_gpg_key_url: StrictStr = setting("https://download.docker.com/linux/rhel/gpg", "Its signing "
                                                                                                     "key.")
    docker_engine_service_state: Literal["started", "stopped"] = setting("started", "Service state.")
    docker_engine_service_enabled: Bool = setting(True, "Start Docker at boot.")
    docker_engine_daemon_json_path: AbsolutePath = setting("/etc/docker/daemon.json", "daemon.json path.")
    docker_engine_registry_mirrors: list[StrictStr] = setting(
        None, "Docker Hub pull-through mirrors (from inferfleet_docker_hub_mirror).", templated=True)
    docker_engine_insecure_registries: list[StrictStr] = setting(
        None, "HOST:PORT registries reached over plain HTTP (from inferfleet_insecure_registries).", templated=True)
    docker_engine_data_root: StrictStr = setting("", "Docker's data root; empty leaves it alone.")
    docker_engine_log_driver: StrictStr = setting("", "Default log driver; empty leaves it alone.")
    docker_engine_log_opts: dict[StrictStr, StrictStr] = setting({}, "Log options.",
                                                                 {"max-size": "100m", "max-file": "3"})
    docker_engine_runtimes: dict[StrictStr, dict] = setting(
        {}, "More runtimes, name: {path, runtimeArgs}; merged with the accelerator's runtime.",
        {"crun": {"path": "/usr/bin/crun"}})
    docker_engine_default_runtime: StrictStr = setting("", "Default runtime; empty keeps the accelerator runtime's "
                                                           "choice (accel_runtime_set_default) or Docker's.")
    docker_engine_daemon_options: dict[StrictStr, Any] = setting(
        {}, "Any other daemon.json keys, merged last.", {"log-driver": "json-file"},
        fix='write daemon.json keys as a mapping, e.g. {"log-driver": "json-file"}')
    docker_engine_users: list[Annotated[StrictStr, Field(min_length=1)]] = setting(
        [], "Users added to the docker group.", ["alice"])


class AccelRuntime(Strict):
    """Role accel_runtime (stage docker)."""

    accel_runtime_platform: Literal[PLATFORMS] = setting(None, "Accelerator family (from inferfleet_platform).",
                                                         templated=True)
    accel_runtime_install: Bool = setting(True, "Install the vendor runtime packages; false when they are there "
                                                "already (the daemon.json registration runs either way).")
    accel_runtime_set_default: Bool = setting(False, "Make the vendor runtime Docker's default runtime.")
    accel_runtime_habana_package: StrictStr = setting("habanalabs-container-runtime", "Habana runtime package.")
    accel_runtime_habana_path: AbsolutePath = setting("/usr/bin/habana-container-runtime", "Habana runtime binary.")
    accel_runtime_habana_apt_repo: StrictStr = setting(None, "Habana apt source line (or a mirror's).",
                                                       templated=True)
    accel_runtime_habana_apt_key_url: StrictStr = setting(
        "https://vault.habana.ai/artifactory/api/gpg/key/public", "Habana apt signing key URL.")
    accel_runtime_habana_rpm_repo_url: StrictStr = setting(None, "Habana rpm repository base URL.", templated=True)
    accel_runtime_nvidia_package: StrictStr = setting("nvidia-container-toolkit", "NVIDIA toolkit package.")
    accel_runtime_nvidia_path: AbsolutePath = setting("/usr/bin/nvidia-container-runtime", "NVIDIA runtime binary.")
    accel_runtime_nvidia_apt_repo: StrictStr = setting(
        "deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /",
        "NVIDIA apt source line (or a mirror's).")
    accel_runtime_nvidia_apt_key_url: StrictStr = setting("https://nvidia.github.io/libnvidia-container/gpgkey",
                                                          "NVIDIA apt signing key URL.")
    accel_runtime_nvidia_rpm_repo_url: StrictStr = setting(
        "https://nvidia.github.io/libnvidia-container/stable/rpm/nvidia-container-toolkit.repo",
        "URL of nvidia-container-toolkit.repo.")
    accel_runtime_ascend_mode: Literal["devices", "runtime"] = setting(
        "devices", "devices: containers get /dev/davinci* and the driver mounts; runtime: the Ascend Docker Runtime.",
        "runtime")
    accel_runtime_ascend_installer: StrictStr = setting(
        "", "Ascend-docker-runtime_<version>_linux-<arch>.run: a controller path or an http(s) URL.")
    accel_runtime_ascend_path: AbsolutePath = setting("/usr/local/Ascend/Ascend-Docker-Runtime/ascend-docker-runtime",
                                                      "Ascend runtime binary.")
    accel_runtime_ascend_host_paths: list[AbsolutePath] = setting(
        None, "Host paths an Ascend container mounts in devices mode; each must exist (default: the list in "
              "roles/accel_runtime/files/container_access.yml).", templated=True)


class ImageBuild(Strict):
    """An image the fleet builds from a vendor base and a vLLM source (seed 004, section 1.4)."""

    image: ImageRef = setting(..., "The name it gets: what inferfleet_images or a service's image names.",
                              "registry.example.com/inferfleet/vllm-fork-gaudi:1.21.3-aice-v1.21.0")
    base: ImageRef = setting(..., "The vendor's base image.",
                             "vault.habana.ai/gaudi-docker/1.21.3/ubuntu22.04/habanalabs/pytorch-installer-2.6.0:latest")
    git: Url | None = setting(None, "Git URL of the vLLM source, cloned in the build (the build host needs to reach "
                                    "it).", "https://github.com/HabanaAI/vllm-fork")
    ref: StrictStr | None = setting(None, "Branch or tag of the git source.", "aice/v1.21.0", min_length=1)
    path: StrictStr | None = setting(None, "Or a directory on the controller holding the source (air-gapped "
                                           "sites).", "/srv/src/vllm-fork", min_length=1)
    requirements: StrictStr = setting("requirements-hpu.txt", "The requirements file of the source, installed "
                                                              "first.")
    pip_index_url: Url = setting("", "The pip index the build installs from (seed 004 uses a mirror).",
                                 "https://mirrors.aliyun.com/pypi/simple/")
    pip_args: list[StrictStr] = setting([], "More pip install arguments.", ["--no-build-isolation"])
    env: dict[EnvName, EnvValue] = setting({"VLLM_TARGET_DEVICE": "hpu"}, "Environment of the source's install.",
                                           {"VLLM_TARGET_DEVICE": "hpu"})

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.git) == bool(self.path):
            raise ValueError("give the source as git (with ref) or as path, exactly one of them")
        if self.git and not self.ref:
            raise ValueError("a git source needs ref (the branch or tag to build)")
        return self


class Images(Strict):
    """Role images (stage images)."""

    images_pull_policy: Literal["always", "not_present"] = setting(
        "always", "always: ask the registry each run (an unchanged tag moves only a manifest); not_present: never "
                  "contact it for an image already on the host.", "not_present")
    images_registry_credentials: list[dict] = setting(None, "Registry logins (from "
                                                            "inferfleet_registry_credentials).", templated=True)
    images_extra: list[ImageRef] = setting([], "More images to pull on every host.", ["busybox:1.36"])
    images_mirror: StrictStr = setting(None, "LAN registry (from inferfleet_registry_mirror).", templated=True)
    images_builds: list[ImageBuild] = setting(
        [], "Images the fleet builds once (on one host) and pushes to the LAN mirror, skipped when present.",
        [{"image": "registry.example.com/inferfleet/vllm-fork-gaudi:1.21.3-aice-v1.21.0",
          "base": "vault.habana.ai/gaudi-docker/1.21.3/ubuntu22.04/habanalabs/pytorch-installer-2.6.0:latest",
          "git": "https://github.com/HabanaAI/vllm-fork", "ref": "aice/v1.21.0"}])
    images_build_dir: AbsolutePath = setting("/var/lib/inferfleet/builds", "Where the build host keeps the build "
                                                                            "contexts.")


class Models(Strict):
    """Role models (stage models)."""

    models_catalogue: dict[StrictStr, Any] = setting(None, "Host path -> source (from inferfleet_models).",
                                                     templated=True)
    models_owner: StrictStr = setting("root", "Owner of the placed files.")
    models_group: StrictStr = setting("root", "Group of the placed files.")
    models_rsync_package: StrictStr = setting("rsync", "Package that brings rsync to the hosts (the copy from the "
                                                       "fleet cache uses it).")


class FabricSource(Strict):
    """Where the fabric stage gets its collective test's source: exactly one of git (with ref), url, path or
    image_path."""

    git: Url | None = setting(None, "Git URL, cloned once on the controller and copied to the hosts.",
                              "https://github.com/HabanaAI/hccl_demo")
    ref: StrictStr | None = setting(None, "Branch, tag or commit of the git source.", "main", min_length=1)
    url: Url | None = setting(None, "A .tar.gz of the source, downloaded once on the controller (air-gapped "
                                    "sites: a LAN web server).", "http://10.0.0.5/src/hccl_demo.tar.gz")
    path: StrictStr | None = setting(None, "A directory on the controller holding the source.",
                                     "/srv/src/hccl_demo", min_length=1)
    image_path: StrictStr | None = setting(None, "A directory inside the test image (CANN's tools/hccl_test); "
                                                 "{ascend_dir} stands for fabric_ascend_dir.",
                                           "/usr/local/Ascend/ascend-toolkit/latest/tools/hccl_test",
                                           min_length=1)

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("git", "url", "path", "image_path") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give the source as exactly one of git (with ref), url, path or image_path"
                             + (f", got {' and '.join(given)}" if given else ""))
        if self.git and not self.ref:
            raise ValueError("a git source needs ref (the branch, tag or commit to build)")
        return self


class FabricTest(Strict):
    """One collective test of the fabric stage."""

    test: StrictStr = setting(..., "The collective (hccl_demo: all_reduce, all_gather, ...; hccl_test and "
                                   "nccl-tests: the program's name without _test/_perf).", "all_reduce",
                              min_length=1)
    size: ByteSize | None = setting(None, "Message size (hccl_demo --size), or the largest of a sweep (-e); "
                                          "bytes or K/M/G.", "256m")
    min_size: ByteSize | None = setting(None, "Smallest size of a sweep (hccl_test and nccl-tests -b).", "8K")
    iterations: StrictInt | None = setting(None, "Iterations (hccl_demo --loop, -n elsewhere); default: the "
                                                 "tool's.", 1000, ge=1)


class Fabric(Strict):
    """Role fabric (stage fabric)."""

    fabric_enabled: Bool = setting(True, "Run the collective-bandwidth gate on this host (hosts of one card "
                                         "and cpu hosts skip it).", False)
    fabric_tests: list[FabricTest] | None = setting(
        None, "Tests to run; default per platform (roles/fabric/files/tools.yml: all_reduce).",
        [{"test": "all_reduce", "size": "256m"}], min_length=1)
    fabric_thresholds: dict[Annotated[StrictStr, Field(min_length=1)],
                            dict[Annotated[StrictStr, Field(min_length=1)],
                                 Annotated[Number, Field(gt=0)]]] = setting(
        {}, "Pass thresholds in GB/s per test and metric, over the defaults of the card model "
            "(thresholds.yml); a measured value must exceed them.",
        {"all_reduce": {"nw_bandwidth": 127, "algo_bandwidth": 73}},
        fix="write thresholds as {test: {metric: GB/s}}, e.g. {all_reduce: {nw_bandwidth: 127}}")
    fabric_fail_fleet: Bool = setting(False, "One host failing the gate fails every host (default: only that "
                                             "host stops).", True)
    fabric_group: Annotated[StrictStr, _rule(SERVICE_NAME, "must be 1-63 lower-case letters, digits, '.', '_' "
                                                           "or '-'")] | None = setting(
        None, "Hosts with the same group run one test across all of them (Gaudi: the HCCL_COMM_ID rendezvous "
              "at the first host).", "rack1")
    fabric_port: StrictInt = setting(5555, "Port of the rendezvous (HCCL_COMM_ID) on the group's first host.",
                                     5555, ge=1, le=65535)
    fabric_image: ImageRef | None = setting(None, "Image the test is built and run in (default: the platform's "
                                                  "serving image).", "vault.habana.ai/gaudi-docker/1.21.3/"
                                                                     "ubuntu22.04/habanalabs/pytorch-installer-"
                                                                     "2.6.0:latest")
    fabric_source: FabricSource | None = setting(
        None, "Source of the test (default per platform: hccl_demo and nccl-tests from git, hccl_test from the "
              "CANN toolkit in the image).", {"path": "/srv/src/hccl_demo"})
    fabric_build_command: StrictStr | None = setting(None, "Build command, run in the source inside the image "
                                                           "(default per platform: make -j).", "make -j",
                                                     min_length=1)
    fabric_mpi_home: StrictStr | None = setting(None, "Ascend: the MPI hccl_test is built with and run by (default "
                                                      "/usr/local/mpich).", "/usr/local/openmpi", min_length=1)
    fabric_ascend_dir: StrictStr = setting("/usr/local/Ascend/ascend-toolkit/latest", "Ascend: the CANN toolkit "
                                                                                      "in the image.")
    fabric_libfabric_root: StrictStr | None = setting(
        None, "Gaudi scale-out over host NICs: libfabric in the image (LIBFABRIC_ROOT, added to "
              "LD_LIBRARY_PATH, seed 004).", "/opt/libfabric", min_length=1)
    fabric_env: dict[EnvName, EnvValue] = setting({}, "More environment of the test container.",
                                                  {"HCCL_OVER_OFI": "1"})
    fabric_volumes: list[Annotated[StrictStr, _rule(r"/[^:\s]*:/[^:\s]*(?::(?:ro|rw))?", "is not "
                                                    "HOST_PATH:CONTAINER_PATH[:ro]")]] = setting(
        [], "More mounts of the test container.", ["/opt/libfabric:/opt/libfabric:ro"])
    fabric_link_check: Bool = setting(True, "Check every card's links first (hl-smi -n link, hccn_tool -link "
                                            "-net_health), and record nvidia-smi topo -m.")
    fabric_ping: Bool = setting(True, "Ascend: ping each card's address from the next card (hccn_tool -ping).")
    fabric_when_cards_held: Literal["skip", "fail"] = setting(
        "skip", "A card held by a process (a serving container): skip the test on the host, or fail it.", "fail")
    fabric_timeout: Annotated[WholeNumber, Field(ge=10)] = setting(1800, "Seconds one test may run.")
    fabric_work_dir: AbsolutePath = setting("/var/lib/inferfleet/fabric", "Where hosts keep the test's source "
                                                                          "and build.")


class VllmService(Strict):
    """Role vllm_service (stage serve)."""

    vllm_service_rolling: Bool = setting(False, "Replace instances one at a time, each after the previous one is "
                                                "ready again.")
    vllm_service_force_restart: Bool = setting(False, "With vllm_service_rolling, restart unchanged instances too.")
    vllm_service_prune: Bool = setting(True, "Remove this host's inferfleet containers that the plan no longer has.")
    vllm_service_poll_interval: Number = setting(0.2, "Seconds between readiness probes.", gt=0)
    vllm_service_smoke_max_tokens: StrictInt = setting(8, "Tokens the generate smoke request asks for.", ge=1)
    vllm_service_prometheus_config: AbsolutePath | None = setting(
        None, "Where the controller writes the fleet's Prometheus scrape configuration (null: prometheus.yml in "
              "the results directory).", "/etc/prometheus/inferfleet.yml")
    vllm_service_drain_seconds: StrictInt = setting(
        60, "Seconds a rolling restart waits for an instance's requests to finish once its front door sends it no "
            "new ones.", ge=1)


class BenchPrefix(Strict):
    """The shared-prefix dataset, as seed 002's gen_random_dataset.py makes it with the served model's tokenizer:
    groups of prompts that share a random prefix, each with a random suffix."""

    groups: StrictInt = setting(30, "Number of groups (each its own prefix).", 30, ge=1)
    prompts_per_group: StrictInt = setting(100, "Prompts per group.", 100, ge=1)
    prefix_len: StrictInt = setting(12288, "Tokens of each group's shared prefix.", 12288, ge=1)
    suffix_len: StrictInt = setting(12288, "Tokens of each prompt's own suffix.", 12288, ge=1)
    seed: StrictInt = setting(42, "Random seed.", 42)


class Bench(Strict):
    """Role vllm_bench (stage bench)."""

    vllm_bench_services: list[Annotated[StrictStr, Field(min_length=1)]] = setting(
        [], "Services to benchmark (names); empty: every service of the plan.", ["qwen25-7b"])
    vllm_bench_dataset: Literal["random", "shared_prefix", "sharegpt"] = setting(
        "random", "random (seed 002's first run), shared_prefix (seed 002's gen_random_dataset.py, measures prefix "
                  "caching) or sharegpt (vllm_bench_sharegpt_path).", "shared_prefix")
    vllm_bench_input_len: StrictInt = setting(512, "Prompt tokens (random) per request.", 512, ge=1)
    vllm_bench_output_len: StrictInt = setting(256, "Output tokens per request.", 256, ge=1)
    vllm_bench_num_prompts: StrictInt = setting(3000, "Requests per run.", 3000, ge=1)
    vllm_bench_concurrency: list[Annotated[StrictInt, Field(ge=1)]] = setting(
        [8], "Concurrency of each run; several values make a sweep that finds the knee.", [1, 2, 4, 8, 16, 32],
        min_length=1, fix="give concurrencies as a list of whole numbers >= 1, e.g. [1, 2, 4, 8]")
    vllm_bench_prefix: BenchPrefix = setting(
        {"groups": 30, "prompts_per_group": 100, "prefix_len": 12288, "suffix_len": 12288, "seed": 42},
        "The shared_prefix dataset's shape (seed 002's values).", {"groups": 4, "prompts_per_group": 5,
                                                                    "prefix_len": 256, "suffix_len": 64})
    vllm_bench_sharegpt_path: StrictStr | None = setting(None, "A ShareGPT-style JSON file on the controller "
                                                               "(vllm_bench_dataset: sharegpt).",
                                                         "/srv/datasets/ShareGPT_V3_unfiltered_cleaned_split.json",
                                                         min_length=1)
    vllm_bench_slo: dict[Literal["p99_ttft_ms", "p99_tpot_ms"], Annotated[Number, Field(gt=0)]] = setting(
        {}, "Service level objectives the knee of a sweep is found against (ms).",
        {"p99_ttft_ms": 2000, "p99_tpot_ms": 100})
    vllm_bench_baseline: StrictStr = setting(
        "previous", "What the regression gate compares with: previous (the last run of the same benchmark), none, "
                    "or a baseline file on the controller.", "benchmarks/baseline.json", min_length=1)
    vllm_bench_tolerance: dict[Literal["output_throughput", "p99_ttft_ms", "p99_tpot_ms"],
                               Annotated[Number, Field(ge=0)]] = setting(
        {"output_throughput": 0.10, "p99_ttft_ms": 0.25, "p99_tpot_ms": 0.25},
        "Allowed drift from the baseline, a fraction: throughput may drop, latencies may rise, this much.",
        {"output_throughput": 0.05})
    vllm_bench_update_baseline: Bool = setting(False, "Accept this run as the new baseline (the gate does not fail).",
                                               True)
    vllm_bench_rerun: Literal["changed", "always"] = setting(
        "changed", "changed: a benchmark whose client command and serving container are those of its last passing "
                   "measurement is not run again, and that measurement is shown (a re-run of site.yml on a "
                   "converged fleet measures nothing); always: measure every run (`inferfleet bench run` does).",
        "always")
    vllm_bench_warmups: Annotated[WholeNumber, Field(ge=0)] = setting(
        0, "Warm-up requests before each run is measured (the client's --num-warmups).", 4)
    vllm_bench_parallel_hosts: Annotated[WholeNumber, Field(ge=0)] = setting(
        0, "Hosts benchmarked at once; 0: all (each host runs its own client against its own services). 1 where "
           "hosts share a machine, as the sandbox's do.", 1)
    vllm_bench_timeout: Annotated[WholeNumber, Field(ge=10)] = setting(3600, "Seconds one benchmark run may take.")
    vllm_bench_extra_args: list[StrictStr] = setting([], "More `vllm bench serve` arguments, appended as given.",
                                                     ["--request-rate", "20"])
    vllm_bench_work_dir: AbsolutePath = setting("/var/lib/inferfleet/bench", "Where hosts keep datasets and result "
                                                                            "files.")


GROUPS: tuple[type[Strict], ...] = (Inventory, Preflight, HostTuning, DockerEngine, AccelRuntime, Images, Fabric,
                                     Models, VllmService, Bench)
# role -> the settings groups its argument spec declares (a role also reads the inferfleet_* it names)
ROLE_SETTINGS: dict[str, tuple[type[Strict], tuple[str, ...]]] = {
    "preflight": (Preflight, ("inferfleet_platform", "inferfleet_accelerator")),
    "host_tuning": (HostTuning, ()),
    "docker_engine": (DockerEngine, ("inferfleet_docker_hub_mirror", "inferfleet_insecure_registries")),
    "accel_runtime": (AccelRuntime, ("inferfleet_platform",)),
    "images": (Images, ("inferfleet_registry_mirror", "inferfleet_registry_credentials", "inferfleet_saved_plan",
                        "inferfleet_run_dir")),
    "fabric": (Fabric, ("inferfleet_platform", "inferfleet_saved_plan", "inferfleet_run_dir",
                              "inferfleet_results_dir")),
    "models": (Models, ("inferfleet_models", "inferfleet_model_cache_dir", "inferfleet_models_offline",
                        "inferfleet_hf_endpoint", "inferfleet_hf_token", "inferfleet_modelscope_endpoint",
                        "inferfleet_modelscope_token", "inferfleet_saved_plan", "inferfleet_run_dir")),
    # inferfleet_services is left to the planner: a fleet with inferfleet_serving false may name absent models
    "vllm_service": (VllmService, ("inferfleet_serving", "inferfleet_saved_plan", "inferfleet_run_dir",
                                   "inferfleet_api_keys")),
    "vllm_bench": (Bench, ("inferfleet_serving", "inferfleet_saved_plan", "inferfleet_run_dir",
                           "inferfleet_results_dir", "inferfleet_api_keys")),
}
SETTINGS: dict[str, tuple[type[Strict], Any]] = {name: (group, info) for group in GROUPS
                                                 for name, info in group.model_fields.items()}
SECRET_SETTINGS = frozenset({"inferfleet_registry_credentials", "images_registry_credentials", "inferfleet_hf_token",
                             "inferfleet_modelscope_token", "inferfleet_api_keys"})


# --- problems ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """A refusal: where (host, or the inventory source when host is empty), which field, why, and the fix."""

    host: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"host {self.host}: {self.field}: {self.message} (fix: {self.fix})"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InventoryProblem(Problem):
    """A problem of the inventory as a whole (no hosts, a file Ansible cannot parse); host holds its path."""

    def __str__(self) -> str:
        return f"inventory {self.host}: {self.field}: {self.message} (fix: {self.fix})"


def shown(value, limit: int = 60) -> str:
    """A given value as users read it in a message: repr, cut when long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


_TYPE_WORDS = {
    "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string", "bool_type": "true or false",
    "bool_parsing": "true or false", "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "none_required": "null",
}


def _phrase(error: dict) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {sign} {bound}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '').replace(chr(39), '')}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "too_long":
        return f"may hold at most {ctx.get('max_length')} items"
    if kind == "string_too_long":
        return f"may be at most {ctx.get('max_length')} characters"
    if kind == "missing":
        return "is missing"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "finite_number":
        return "must be a finite number"
    return error["msg"][:1].lower() + error["msg"][1:]


def _fields(model) -> dict:
    """A model's fields by the name users write (the alias where there is one)."""
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def _model_in(annotation) -> type[BaseModel] | None:
    """The model a field holds, looking through unions, Annotated and list/dict items."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation) -> bool:
    if getattr(annotation, "__origin__", None) is dict or annotation is dict:
        return True
    return any(_is_mapping(arg) for arg in getattr(annotation, "__args__", ()))


def _walk(model: type[BaseModel], loc: tuple) -> tuple[Any, type[BaseModel] | None]:
    """The FieldInfo a pydantic error location points at (or None) and the model that holds its keys. A mapping's
    keys (a host path in inferfleet_models, a test in fabric_thresholds) stay with the mapping's own field; its values'
    keys are that value model's fields."""
    current, info, key_next = model, None, False
    for part in loc:
        if isinstance(part, int):
            continue
        if key_next:  # a key of the mapping `info` describes
            key_next = False
            continue
        if current is None:
            return (info, None) if info is not None and _is_mapping(info.annotation) else (None, None)
        info = _fields(current).get(part)
        if info is None:
            return None, None
        current = _model_in(info.annotation)
        key_next = _is_mapping(info.annotation)
    return info, current


def _example_fix(path: str, info) -> str:
    extra = (info.json_schema_extra or {}) if info is not None else {}
    if extra.get("fix"):
        return extra["fix"]
    if extra.get("example") is not None:
        return f"set {path}: {_yaml_inline(extra['example'])}"
    if info is not None and info.description:
        return f"{path}: {info.description[:1].lower()}{info.description[1:]}"
    return f"correct {path}"


def _yaml_inline(value) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f"did you mean {close[0]}?" if close else ""


def problems_from_error(host: str, err: ValidationError, model: type[BaseModel], prefix: str = "",
                        value_of=None) -> list[Problem]:
    """Pydantic's errors as Problems. prefix: the field path the model sits at (e.g. inferfleet_services[x])."""
    found = []
    for error in err.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and (p in _UNION_TAGS or p in _model_names())
                                                    or "[" in str(p)))
        found.append((loc, _join(prefix, loc), error))
    # a union reports one error per member: where the value fits one member's shape (a mapping with a bad key),
    # that member's errors say what is wrong, not "must be a string" from another member
    paths = [path for _, path, _ in found]
    problems, seen = [], set()
    for loc, path, error in found:
        kind = error["type"]
        deeper = any(other != path and (other.startswith(path + ".") or other.startswith(path + "["))
                     for other in paths)
        specific = any(other == path and e["type"] not in _TYPE_WORDS for _, other, e in found)
        if kind in _TYPE_WORDS and (deeper or specific):
            continue
        if path in seen:  # otherwise the first error of a location reads best
            continue
        seen.add(path)
        info = _walk(model, loc)[0]
        if kind == "extra_forbidden":
            holder = _walk(model, loc[:-1])[1] if loc[:-1] else model
            siblings = sorted(_fields(holder)) if holder is not None else []
            hint = _did_you_mean(str(loc[-1]), siblings)
            problems.append(Problem(host, path, f"is not a known key{' (' + hint + ')' if hint else ''}",
                                    f"remove it or correct the spelling (known: {', '.join(siblings)})"))
            continue
        message = _phrase(error)
        secret = bool(loc) and loc[0] in SECRET_SETTINGS  # a token's value is not repeated in a message
        if kind in _TYPE_WORDS:  # the members' types, as one phrase: "must be a string or a mapping"
            words = []
            for _, other, e in found:
                if other == path and e["type"] in _TYPE_WORDS and _TYPE_WORDS[e["type"]] not in words:
                    words.append(_TYPE_WORDS[e["type"]])
            if "a whole number" in words and "a number" in words:
                words.remove("a whole number")
            message = "must be " + " or ".join(words)
        if kind != "missing":
            message += f", got {'a ' + type(error.get('input')).__name__ if secret else shown(error.get('input'))}"
        problems.append(Problem(host, path, message, _example_fix(path, info)))
    return problems


# pydantic names union members in error locations (e.g. 'str', 'constrained-int', 'function-after[...]', or a
# model's class name)
_UNION_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "dict[str,any]", "constrained-int",
               "constrained-float", "constrained-str", "literal"}


def _model_names() -> set[str]:
    return {name for name, value in globals().items() if isinstance(value, type) and issubclass(value, BaseModel)}


def _join(prefix: str, loc: tuple) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


# --- validation -------------------------------------------------------------------------------------------------
def serving_enabled(host_vars: dict) -> bool:
    """inferfleet_serving as Ansible reads a boolean (true unless set false)."""
    return _bool_text(host_vars.get("inferfleet_serving", True)) is not False


def unknown_settings(host: str, host_vars: dict) -> list[Problem]:
    """Names with one of our prefixes that the schema does not declare: typos, or settings of an older version."""
    problems = []
    for name in sorted(host_vars):
        if name.startswith(OWNED_PREFIXES) and name not in SETTINGS and name not in RUNTIME_NAMES:
            hint = _did_you_mean(name, SETTINGS)
            problems.append(Problem(host, name, f"is not a known inferfleet setting{' (' + hint + ')' if hint else ''}",
                                    "correct the name; docs/settings.md lists every setting"))
    return problems


def validate_settings(host: str, host_vars: dict, groups=()) -> list[Problem]:
    """Problems in one host's settings (every group of the schema); the services are checked by the planner."""
    problems = unknown_settings(host, host_vars)
    for group in GROUPS:
        given = {k: v for k, v in host_vars.items() if k in group.model_fields}
        if group is Inventory:
            given.setdefault("inferfleet_platform", host_vars.get("inferfleet_platform"))
            if given["inferfleet_platform"] is None:
                problems.append(Problem(host, "inferfleet_platform", "is not set",
                                        _example_fix("inferfleet_platform", group.model_fields["inferfleet_platform"])))
                given.pop("inferfleet_platform")
                given["inferfleet_platform"] = "cpu"  # go on checking the rest
                checked = False
            else:
                checked = True
        else:
            checked = True
        try:
            group.model_validate(given)
        except ValidationError as err:
            problems.extend(problems_from_error(host, err, group))
        if group is Inventory and checked:
            problems.extend(_platform_rules(host, host_vars, groups))
    return problems


def _platform_rules(host: str, host_vars: dict, groups) -> list[Problem]:
    """What a type cannot say: the accelerator block is needed off cpu, and the platform matches the group."""
    problems = []
    platform = host_vars.get("inferfleet_platform")
    if platform not in PLATFORMS:
        return problems
    if platform != "cpu" and host_vars.get("inferfleet_accelerator") is None:
        info = Inventory.model_fields["inferfleet_accelerator"]
        problems.append(Problem(host, "inferfleet_accelerator", f"is not set; a {platform} host needs it",
                                _example_fix("inferfleet_accelerator", info)))
    wrong = sorted(g for g in set(PLATFORMS) & set(groups) if g != platform)
    if wrong:
        problems.append(Problem(host, "inferfleet_platform",
                                f"is {platform!r} but the host is in inventory group {wrong[0]!r}",
                                f"move the host to group {platform!r} or set inferfleet_platform: {wrong[0]}"))
    return problems


def parse_service(host: str, position: int, raw) -> tuple[Service | None, str, list[Problem]]:
    """One inferfleet_services entry: the parsed spec, the label its problems use, and the problems."""
    name = raw.get("name") if isinstance(raw, dict) else None
    label = name if isinstance(name, str) and re.fullmatch(SERVICE_NAME, name) else str(position)
    prefix = f"inferfleet_services[{label}]"
    if not isinstance(raw, dict):
        return None, label, [Problem(host, prefix, f"must be a mapping (a service spec), got {shown(raw)}",
                                     "write each service as a mapping: - {name: ..., model: ..., port: ...}")]
    try:
        spec = Service.model_validate(raw)
    except ValidationError as err:
        return None, label, problems_from_error(host, err, Service, prefix)
    if (spec.model is None) == (spec.models is None):
        return None, label, [Problem(host, f"{prefix}.model", "give exactly one of model or models"
                                     + (f", got both ({shown(spec.model)} and {shown(spec.models)})"
                                        if spec.model else ", got neither"),
                                     "set model: /path/on/host, or models: [...] for several pooling models")]
    return spec, label, []


def parse_model_config(host: str, label: str, source: str, raw) -> tuple[dict | None, list[Problem]]:
    """A model config checked for the fields the planner computes with; a plain dict back."""
    field = f"inferfleet_services[{label}].model_config"
    if not isinstance(raw, dict):
        return None, [Problem(host, field, f"{source} must hold a JSON object, got {shown(raw)}",
                              "point model_config at the model's config.json")]
    try:
        ModelConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        key = ".".join(str(p) for p in first["loc"])
        return None, [Problem(host, field, f"{source}: {key} {_phrase(first)}, got {shown(first.get('input'))}",
                              f"correct {key} in {source} (copy config.json from the model's repository)")]
    return raw, []


def service_json_schema() -> dict:
    """JSON Schema of inferfleet_services (editors validate inventories with it)."""
    item = Service.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "inferfleet_services",
            "description": "The model services of a host (inventory variable inferfleet_services).",
            "type": "array", "items": item}
