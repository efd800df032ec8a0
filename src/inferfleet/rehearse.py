"""`inferfleet rehearse`: the production inventory's own plan, run by site.yml on a sandbox fleet shaped like it.

One SIMULATED host per inventory host (or a sample per group), named like it, with the card model, count and
memory the inventory declares or the fact cache discovered; the same site.yml with the same variables. What the
sandbox cannot have is substituted, visibly and only there: each substitution is a row of the table this module
prints and saves (`substitutions`). The plan of the rehearsal is compared with the production plan: what differs
must be a declared substitution (`plan_differences`).

Nothing here reaches a production host, and nothing of a rehearsal lands where production runs keep theirs: the
rehearsal has its own state directory (fact cache, model cache, results, runs).
"""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .models import catalogue_entry
from .paths import pipeline
from .planner import load_mapping, text_config

DEFAULT_NAME = "rehearse"
DEFAULT_REGISTRY_PORT = 5030
# What stands in for a production model: one of the same task, of the same architecture where the sandbox has
# one (sandbox/vllm/make_models.py makes them; the first of each task is its default). An embedding model's
# stand-in has the production model's width (EMBED_STAND_IN), since the smoke request checks it.
STAND_INS = {
    "generate": (("tiny-llama", "LlamaForCausalLM"), ("tiny-qwen2", "Qwen2ForCausalLM")),
    "embed": (("all-MiniLM-L6-v2", "BertModel"),),
    "rerank": (("tiny-reranker", "BertForSequenceClassification"),),
}
EMBED_STAND_IN = "tiny-embed-{width}"
MINILM_WIDTH = 384
TASK_STAND_IN = {"generate": "generate", "embed": "embed", "rerank": "rerank", "score": "rerank",
                 "classify": "rerank", "reward": "rerank"}
# --fault HOST:KIND[:VALUE]; KIND -> the sandbox fault it sets (None: done here) and what VALUE is
FAULTS = {
    "card_held": ("hold", "CARD (index)"),
    "card_missing": ("missing", "CARD (index)"),
    "slow_link": ("slow_link", "CARD:FACTOR (the card's links at FACTOR of their bandwidth)"),
    "port_down": ("port_down", "CARD:PORT (Gaudi NIC port)"),
    "daemon_json_invalid": (None, "none"),
    "host_lost": (None, "STAGE (the host goes down when the run reaches it; default models)"),
}
# The sandbox's bench sizes: production's (thousands of prompts of hundreds of tokens) would take hours on the
# CPU stand-ins. inventories/sandbox/group_vars/all/bench.yml runs the same.
BENCH_SIZES = {"vllm_bench_input_len": 32, "vllm_bench_output_len": 16, "vllm_bench_num_prompts": 20,
               "vllm_bench_concurrency": [2], "vllm_bench_warmups": 4, "vllm_bench_parallel_hosts": 1,
               "vllm_bench_prefix": {"groups": 2, "prompts_per_group": 5, "prefix_len": 64, "suffix_len": 16,
                                     "seed": 42},
               # the CPU stand-ins share a few cores: the p99 of 20 requests varies 4x from one run to the next
               # (24 -> 101 ms measured), so only a collapse of throughput fails a rehearsal's gate
               "vllm_bench_tolerance": {"output_throughput": 0.9}}


@dataclass
class Substitution:
    """One thing the rehearsal runs in place of production's."""

    what: str
    production: str
    rehearsal: str
    why: str
    hosts: str = "all"


@dataclass
class Fault:
    host: str
    kind: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str, hosts: list[str]) -> Fault:
        parts = text.split(":", 2)
        if len(parts) < 2 or parts[1] not in FAULTS:
            kinds = ", ".join(f"{k} ({v[1]})" for k, v in FAULTS.items())
            raise ValueError(f"--fault {text!r}: write HOST:KIND[:VALUE] with KIND one of {kinds}")
        host, kind, value = parts[0], parts[1], parts[2] if len(parts) > 2 else None
        if host not in hosts:
            raise ValueError(f"--fault {text!r}: {host} is not a rehearsed host (rehearsed: {', '.join(hosts)})")
        if kind in ("card_held", "card_missing", "slow_link", "port_down") and not value:
            raise ValueError(f"--fault {text!r}: {kind} needs a value, {FAULTS[kind][1]}")
        return cls(host, kind, value)


# --- which hosts --------------------------------------------------------------------------------------------------
def _group(host) -> str:
    groups = [g for g in host.groups if g not in ("all", "ungrouped")]
    return groups[0] if groups else "ungrouped"


def _serves(host) -> bool:
    return bool(host.vars.get("inferfleet_services") or host.vars.get("inferfleet_fleet_front_doors"))


def sample_hosts(hosts: list, sample: int | None) -> list[str]:
    """Every host, or `sample` hosts of each group: hosts with services (or fleet front doors) first, then in
    inventory order. A kept fleet front door keeps one host serving each of its services."""
    if sample is None:
        return [h.name for h in hosts]
    if sample < 1:
        raise ValueError("--sample must be at least 1")
    by_group: dict[str, list] = {}
    for host in hosts:
        by_group.setdefault(_group(host), []).append(host)
    chosen = set()
    for members in by_group.values():
        ranked = sorted(members, key=lambda h: not _serves(h))  # stable: inventory order within each rank
        chosen.update(h.name for h in ranked[:sample])
    for host in hosts:
        if host.name not in chosen:
            continue
        for door in host.vars.get("inferfleet_fleet_front_doors") or []:
            serving = [h for h in hosts if any(s.get("name") == door.get("service")
                                               for s in h.vars.get("inferfleet_services") or [])]
            if serving and not any(h.name in chosen for h in serving):
                chosen.add(serving[0].name)
    return [h.name for h in hosts if h.name in chosen]


# --- what stands in for what --------------------------------------------------------------------------------------
def model_uses(hosts: list) -> dict[str, dict]:
    """Each model path the services name: the task it serves and the architecture its model_config declares."""
    uses: dict[str, dict] = {}
    for host in hosts:
        for service in host.vars.get("inferfleet_services") or []:
            if not isinstance(service, dict) or not service.get("model"):
                continue
            config, _, _ = load_mapping(service.get("model_config"), host.base_dir, "model_config") \
                if service.get("model_config") else (None, "", "")
            architectures = (config or {}).get("architectures") or []
            task = service.get("task") or "generate"
            entry = uses.setdefault(service["model"], {"task": task, "architecture": None, "width": None,
                                                       "services": []})
            entry["services"].append(f"{host.name}/{service.get('name')}")
            entry["architecture"] = entry["architecture"] or (architectures[0] if architectures else None)
            hidden = (text_config(config) if config else {}).get("hidden_size")
            entry["width"] = entry["width"] or (int(hidden) if isinstance(hidden, int) else None)
    return uses


def substitutions(hosts: list, stand_in_version: str, image: str, registry: str, hub: str,
                  stand_ins_dir: Path, state: Path, os_facts: dict[str, str] | None = None,
                  ) -> tuple[dict, list[Substitution], dict[str, Path]]:
    """The extra variables that make the production inventory run on the sandbox, the table of what they
    substitute, and the stand-in model directories to publish on the local hub under production's repo ids."""
    first = hosts[0].vars if hosts else {}
    rows: list[Substitution] = []
    extra: dict = {
        # reach the sandbox hosts
        "ansible_user": "root", "ansible_become": False,
        "inferfleet_simulated": True,
        # where a rehearsal keeps what production runs keep under .cache/
        "inferfleet_model_cache_dir": str(state / "model-cache"),
        "inferfleet_results_dir": str(state / "results"),
        "vllm_service_prometheus_config": str(state / "results" / "prometheus.yml"),
    }
    rows.append(Substitution("connection", f"{first.get('ansible_user', '(default)')}@inventory addresses"
                             + (", become" if first.get("ansible_become") else ""),
                             "root@sandbox addresses, sandbox key", "the sandbox hosts' login"))
    platforms = sorted({h.vars.get("inferfleet_platform", "cpu") for h in hosts})
    images = dict(first.get("inferfleet_images") or {})
    extra["inferfleet_images"] = {p: image for p in ("gaudi", "ascend", "nvidia", "cpu")}
    for platform in platforms:
        rows.append(Substitution(f"image ({platform})", images.get(platform) or "(default)", image,
                                 "vendor images need real cards; vLLM's CPU build serves the stand-in models"))
    versions = dict(first.get("inferfleet_vllm_versions") or {})
    extra["inferfleet_vllm_versions"] = {p: stand_in_version for p in ("gaudi", "ascend", "nvidia", "cpu")}
    for platform in platforms:
        if versions.get(platform, stand_in_version) != stand_in_version:
            rows.append(Substitution(f"vLLM version ({platform})", versions[platform], stand_in_version,
                                     "the flags follow the image's vLLM (pooling: --task before 0.10.1)"))
    if first.get("images_builds"):
        extra["images_builds"] = []
        rows.append(Substitution("image builds", ", ".join(b.get("image", "?") for b in first["images_builds"]),
                                 "none", "their base images and sources are upstream, out of the sandbox's reach"))
    extra["inferfleet_front_door_image"] = image
    rows.append(Substitution("front door image", str(first.get("inferfleet_front_door_image") or "(default)"),
                             image, "the sandbox image holds Debian's HAProxy, which reads the same configuration"))
    extra["inferfleet_insecure_registries"] = [registry]
    extra["inferfleet_registry_mirror"] = ""
    extra["inferfleet_registry_credentials"] = []
    rows.append(Substitution("registries", "upstream registries"
                             + (f", mirror {first['inferfleet_registry_mirror']}"
                                if first.get("inferfleet_registry_mirror") else ""),
                             f"the sandbox registry {registry}", "no upstream registry is reachable"))
    extra["accel_runtime_install"] = False
    rows.append(Substitution("vendor container runtime packages", "installed from the vendors' repositories",
                             "the sandbox's strict stand-ins at the runtime paths (daemon.json registered for real)",
                             "vendor repositories are out of reach; the stand-ins refuse what the runtimes refuse"))
    # models: the production sources, answered by the local hub with a stand-in of the same task
    extra["inferfleet_hf_endpoint"] = hub
    extra["inferfleet_modelscope_endpoint"] = hub
    extra["inferfleet_models_offline"] = False
    catalogue = dict(first.get("inferfleet_models") or {})
    uses = model_uses(hosts)
    publish: dict[str, Path] = {}
    new_catalogue = {}
    for path in sorted(set(catalogue) | set(uses)):
        use = uses.get(path, {"task": "generate", "architecture": None, "services": []})
        choices = STAND_INS[TASK_STAND_IN.get(use["task"], "generate")]
        stand_in, architecture = next((c for c in choices if c[1] == use["architecture"]), choices[0])
        if use["task"] == "embed" and use["width"] and use["width"] != MINILM_WIDTH:
            stand_in = EMBED_STAND_IN.format(width=use["width"])
        value = catalogue.get(path)
        production = "(on the host)"
        if value is None:
            new_catalogue[path] = {"source": f"file://{stand_ins_dir / stand_in}"}
        else:
            ref = catalogue_entry(value)
            production = ref.source
            entry = copy.deepcopy(value) if isinstance(value, dict) else {"source": str(value)}
            if ref.scheme in ("hf", "modelscope"):
                entry["source"] = f"{ref.scheme}://{ref.name}"  # the local hub has one revision of each
                entry.pop("revision", None)
                publish[ref.name] = stand_ins_dir / stand_in
            else:
                entry = {"source": f"file://{stand_ins_dir / stand_in}"}
            new_catalogue[path] = entry
        family = "same architecture" if use["architecture"] == architecture else \
            f"production {use['architecture'] or 'architecture unknown'}, stand-in {architecture}"
        width = f"; {use['width']} wide" if use["task"] == "embed" and use["width"] else ""
        rows.append(Substitution(f"model {path}", production,
                                 f"{stand_in} ({use['task']}; {family}{width})",
                                 "real weights do not fit the sandbox; the planner still sizes the real model "
                                 "from its model_config", ", ".join(use["services"]) or "all"))
    extra["inferfleet_models"] = new_catalogue
    # the planner sizes weights from the controller's copy of a model: production's, not the stand-in
    extra["inferfleet_rehearsal_planning"] = {"inferfleet_models": catalogue, "inferfleet_model_cache_dir":
                                              first.get("inferfleet_model_cache_dir")}
    rows.append(Substitution("vllm serve on the stand-ins", "the plan's flags",
                             "the plan's flags, less what vLLM's CPU build cannot take (tensor parallel size 1, "
                             "the stand-in's context, float32, eager), each change printed on the container log",
                             "the cards are SIMULATED; the plan (cards, ports, memory, KV) stays production's"))
    # fabric: the SIMULATED collective tests, built from the sandbox's stand-in sources
    # (fabric_source, the stand-ins' directory, is set by rehearse(), which knows where the sandbox keeps them)
    extra.update({"fabric_volumes": ["/etc/inferfleet-sim:/etc/inferfleet-sim:ro"],
                  "fabric_mpi_home": "/fabric/build/sim-mpi", "fabric_image": image})
    rows.append(Substitution("collective tests", "hccl_demo / hccl_test / nccl-tests from their sources",
                             "SIMULATED stand-ins printing the real tools' formats",
                             "no interconnect here; thresholds stay production's"))
    bench = {key: first[key] for key in BENCH_SIZES if key in first}
    extra.update(BENCH_SIZES)
    extra["vllm_bench_rerun"] = "always"  # a rehearsal proves every stage, on a kept fleet too
    rows.append(Substitution("bench sizes", ", ".join(f"{k.removeprefix('vllm_bench_')} {v}"
                                                       for k, v in bench.items()) or "(defaults)",
                             ", ".join(f"{k.removeprefix('vllm_bench_')} {v}" for k, v in BENCH_SIZES.items()
                                       if k in ("vllm_bench_num_prompts", "vllm_bench_input_len",
                                                "vllm_bench_output_len", "vllm_bench_tolerance")),
                             "the CPU stand-ins measure the pipeline, not the cards"))
    known = {h.name: (os_facts or {}).get(h.name) for h in hosts}
    systems = sorted({v for v in known.values() if v})
    rows.append(Substitution("OS", ", ".join(systems) + (" (fact cache)" if systems else "")
                             + ("; " if systems and not all(known.values()) else "")
                             + ("not in the fact cache" if not all(known.values()) else ""),
                             "Debian 12 (the sandbox host image)",
                             "the sandbox hosts are Debian containers with systemd and sshd"))
    return extra, rows, publish


def render_table(rows: list[Substitution]) -> list[str]:
    from .text import align

    def cell(text: str, width: int = 64) -> str:
        return text if len(text) <= width else text[:width - 3] + "..."

    lines = ["SUBSTITUTIONS (rehearsal only; every card is SIMULATED; whole rows in substitutions.json)"]
    table = [("what", "production", "rehearsal", "hosts")] + [
        (r.what, cell(r.production), cell(r.rehearsal), cell(r.hosts, 40)) for r in rows]
    return lines + ["  " + line for line in align(table)]


# --- the plan, production's and the rehearsal's ------------------------------------------------------------------
# Keys of a plan whose values follow from the rest (hashes of inputs)
_DERIVED = ("config_hash", "inputs", "hash", "inferfleet.config-hash")
_CONFIG_HASH_LABEL = re.compile(r"^inferfleet\.config-hash=[0-9a-f]+$")


def _normalized(value, replace: dict[str, str]):
    if isinstance(value, dict):
        return {k: _normalized(v, replace) for k, v in value.items() if k not in _DERIVED}
    if isinstance(value, list):
        return [_normalized(v, replace) for v in value]
    if isinstance(value, str):
        if _CONFIG_HASH_LABEL.match(value):
            return "inferfleet.config-hash=*"
        for old, new in replace.items():
            if old:
                value = value.replace(old, new)
        return value
    return value


def _walk(a, b, path: str, out: list[tuple[str, object, object]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            _walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and \
            any(isinstance(x, (dict, list)) for x in a + b):  # lists of values read better whole
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append((path, a, b))


def plan_differences(production: dict, rehearsal: dict, replace: dict[str, str],
                     version_changed: set[str]) -> tuple[list[str], list[str]]:
    """What differs between the two plans' hosts, once the declared string substitutions (images, addresses) are
    applied to production's: (declared, undeclared) lines. Declared besides: the cards being SIMULATED, the
    collective test (its stand-in source and MPI), and, where the image's vLLM version was substituted
    (`version_changed`: platforms), an instance's flags and its warmup cache directory (named after the image's
    inputs). Anything else is undeclared: the rehearsal did not run production's plan."""
    replace = dict(replace)
    for host, plan in production.items():
        if plan.get("platform") not in version_changed:
            continue
        theirs = {i["name"]: i for i in (rehearsal.get(host) or {}).get("instances", [])}
        for inst in plan.get("instances", []):
            other = theirs.get(inst["name"], {})
            if inst.get("warmup_cache_dir") and other.get("warmup_cache_dir"):
                replace[inst["warmup_cache_dir"]] = other["warmup_cache_dir"]
    replace = dict(sorted(replace.items(), key=lambda kv: -len(kv[0])))
    declared, undeclared = [], []
    diffs: list = []
    for host in sorted(set(production) | set(rehearsal)):
        _walk(_normalized(production.get(host), replace), _normalized(rehearsal.get(host), replace), host, diffs)
    for path, old, new in diffs:
        host = path.split(".", 1)[0]
        platform = (production.get(host) or {}).get("platform")
        flag_field = any(f".{key}" in path for key in ("args", "docker_run", "container.command"))
        line = f"{path}: {json.dumps(old)} -> {json.dumps(new)}"
        substituted = (path.startswith(f"{host}.fabric.") or path == f"{host}.accelerator.simulated"
                       or (platform in version_changed and ".instances[" in path and flag_field))
        (declared if substituted else undeclared).append(line)
    return declared, undeclared


# --- the report ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    suite: str
    name: str
    classname: str
    failure: str | None = None
    skipped: str | None = None
    seconds: float = 0.0


def stage_of_plays(project: Path, stages: list[str]) -> dict[str, str]:
    """Play name -> stage, from each stage's playbook (the pipeline imports one per stage, tagged with its name)."""
    mapping = {}
    for tags, book in pipeline(project):
        stage = next((t for t in tags if t in stages), None)
        if stage is None:
            continue
        for play in yaml.safe_load(book.read_text()) or []:
            mapping.setdefault(play.get("name", ""), stage)
    return mapping


def cases(results: list, hosts: list[str], stages: list[str], play_stage: dict[str, str],
          elapsed: dict[tuple[str, str], float] | None = None) -> list[Case]:
    """A test case per host x stage (failed: its failures; skipped: the run never reached it), and one per
    instance's smoke request."""
    seen: dict[tuple[str, str], list] = {}
    smoke: dict[str, list[Case]] = {}
    for result in results:
        stage = play_stage.get(result.play)
        if stage is None or result.host not in hosts:
            continue
        seen.setdefault((result.host, stage), []).append(result)
        for inst in (result.data or {}).get("instances") or []:
            if stage == "serve" and isinstance(inst, dict) and "ready" in inst and "smoke" in inst:
                reason = None if inst.get("ready") else (inst.get("error") or "not ready")
                smoke.setdefault(result.host, []).append(Case(
                    "smoke", f"smoke {inst.get('name')}", result.host, failure=reason,
                    seconds=float(inst.get("seconds") or 0.0)))
    out = []
    for host in hosts:
        for stage in stages:
            found = seen.get((host, stage))
            case = Case(host, stage, f"{host}", seconds=(elapsed or {}).get((host, stage), 0.0))
            if found is None:
                case.skipped = "not reached: the run ended before this stage (see the failures above)"
            else:
                failed = [r for r in found if r.status in ("failed", "unreachable")]
                if failed:
                    case.failure = "\n".join(f"{r.task}: {'UNREACHABLE: ' if r.status == 'unreachable' else ''}"
                                              f"{r.msg}" for r in failed)
            out.append(case)
        out += smoke.get(host, [])
    return out


def junit_xml(all_cases: list[Case], name: str = "inferfleet rehearse") -> str:
    """The cases as JUnit XML of the dialect the Jenkins xUnit plugin's junit-10.xsd describes (GitLab and
    GitHub's report actions read it): a testsuite per host (and one for the plan), a testcase per case."""
    root = ET.Element("testsuites", name=name)
    suites: dict[str, list[Case]] = {}
    for case in all_cases:
        suites.setdefault(case.suite if case.suite != "smoke" else case.classname, []).append(case)
    for suite_name, members in suites.items():
        suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(members)),
                              failures=str(sum(1 for c in members if c.failure is not None)), errors="0",
                              skipped=str(sum(1 for c in members if c.skipped is not None)),
                              time=f"{sum(c.seconds for c in members):.3f}")
        for case in members:
            element = ET.SubElement(suite, "testcase", name=case.name, classname=case.classname,
                                    time=f"{case.seconds:.3f}")
            if case.failure is not None:
                ET.SubElement(element, "failure", message=case.failure.splitlines()[0][:300] if case.failure
                              else "failed", type="failure").text = case.failure
            elif case.skipped is not None:
                ET.SubElement(element, "skipped", message=case.skipped)
    root.set("tests", str(len(all_cases)))
    root.set("failures", str(sum(1 for c in all_cases if c.failure is not None)))
    root.set("errors", "0")
    root.set("time", f"{sum(c.seconds for c in all_cases if c.suite != 'smoke'):.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


@dataclass
class Report:
    ok: bool
    hosts: list[str]
    stages: list[str]
    cases: list[Case] = field(default_factory=list)
    substitutions: list[Substitution] = field(default_factory=list)
    plan: dict = field(default_factory=dict)
    elapsed: float = 0.0
    run_dir: str | None = None
    directory: str | None = None
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "simulated": True, "hosts": self.hosts, "stages": self.stages,
                "elapsed": round(self.elapsed, 1), "run_dir": self.run_dir, "directory": self.directory,
                "plan": self.plan, "errors": self.errors,
                "substitutions": [asdict(s) for s in self.substitutions],
                "cases": [asdict(c) for c in self.cases]}

    def summary(self) -> list[str]:
        failed = [c for c in self.cases if c.failure is not None]
        skipped = [c for c in self.cases if c.skipped is not None]
        lines = [f"rehearsal {'PASSED' if self.ok else 'FAILED'} (SIMULATED cards): {len(self.hosts)} host(s), "
                 f"{len(self.cases)} case(s), {len(failed)} failed, {len(skipped)} not reached, "
                 f"{self.elapsed:.0f} s"]
        if self.plan:
            lines.append(f"plan: production {self.plan.get('production_hash', '?')[:12]}, rehearsal "
                         f"{self.plan.get('rehearsal_hash', '?')[:12]}; {len(self.plan.get('declared', []))} "
                         f"declared difference(s), {len(self.plan.get('undeclared', []))} undeclared")
        for case in failed:
            lines.append(f"FAILED  {case.classname} {case.name}: {case.failure.splitlines()[0][:300]}")
        lines += [f"ERROR   {e}" for e in self.errors]
        return lines


# --- reaching the sandbox --------------------------------------------------------------------------------------
# Where a host that is not rehearsed "is": TEST-NET-1 (RFC 5737), never routed, so that nothing of a rehearsal can
# reach a production host through it
UNREHEARSED_ADDRESS = "192.0.2.1"


def connection_vars(addresses: dict[str, str], key_path: Path, every_host: list[str]) -> dict:
    """Extra variables (they win over every inventory file, a host_vars file's ansible_host included) that point
    each rehearsed host at its sandbox host and every other host at an address that is never routed: no task of a
    rehearsal can reach a production address."""
    addresses = {host: addresses.get(host, UNREHEARSED_ADDRESS) for host in every_host}
    return {"inferfleet_rehearsal_addresses": addresses,
            "ansible_host": "{{ inferfleet_rehearsal_addresses[inventory_hostname] }}", "ansible_port": 22,
            "ansible_ssh_private_key_file": str(key_path),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": "/usr/bin/python3"}


# --- the rehearsal ------------------------------------------------------------------------------------------------
class Refused(ValueError):
    """The production inventory itself is refused: the lines `inferfleet plan` and `up` print, unchanged."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(f"ERROR   {p}" for p in self.problems))


def os_facts(facts_dir: Path, hosts: list[str]) -> dict[str, str]:
    """Each host's distribution as preflight left it in the fact cache (jsonfile: one JSON file per host)."""
    found = {}
    for host in hosts:
        try:
            facts = json.loads((facts_dir / host).read_text())
        except (OSError, ValueError):
            continue
        if facts.get("ansible_distribution"):
            found[host] = f"{facts['ansible_distribution']} {facts.get('ansible_distribution_version', '')}".strip()
    return found


def _shape(platform: str, accelerator: dict) -> tuple[str, dict]:
    from .sandbox import profiles

    profile = profiles.derive(platform, accelerator.get("model") or None, accelerator.get("count") or None,
                              accelerator.get("memory_gib") or None)
    return profiles.BASE_PROFILE_BY_PLATFORM[platform], profile.to_json()


class _FaultInjector:
    """Applies the --fault list to the sandbox and undoes it afterwards; `host_lost` stops its host when the run
    reaches the stage."""

    def __init__(self, sandbox, faults: list[Fault], log, facts_dir: Path | None = None):
        self.sandbox, self.faults, self.log, self.facts_dir = sandbox, faults, log, facts_dir
        self.lost: dict[str, str] = {f.host: (f.value or "models") for f in faults if f.kind == "host_lost"}
        self.stopped: set[str] = set()

    def _container(self, host: str):
        return self.sandbox.client.containers.get(f"{self.sandbox.name}-{host}")

    def apply(self) -> None:
        for fault in self.faults:
            self.log(f"fault (SIMULATED): {fault.host} {fault.kind}{' ' + fault.value if fault.value else ''}")
            sim = FAULTS[fault.kind][0]
            if sim:
                self.sandbox.set_fault(fault.host, sim, fault.value)
            elif fault.kind == "daemon_json_invalid":
                code, out = self._container(fault.host).exec_run(["sh", "-c", (
                    "mkdir -p /etc/docker; [ -e /etc/docker/daemon.json.rehearsal ] || "
                    "cp -p /etc/docker/daemon.json /etc/docker/daemon.json.rehearsal 2>/dev/null || "
                    ": > /etc/docker/daemon.json.rehearsal-absent; "
                    "printf '{\"log-driver\": \"json-file\",\\n' > /etc/docker/daemon.json")])
                if code != 0:
                    raise RuntimeError(out.decode(errors="replace"))

    def on_stage(self, stage: str) -> None:
        for host, when in self.lost.items():
            if when == stage and host not in self.stopped:
                self.stopped.add(host)
                self.log(f"fault (SIMULATED): {host} lost at stage {stage} (its sandbox host is killed)")
                self._container(host).kill()

    def undo(self) -> None:
        for fault in self.faults:
            try:
                if fault.kind == "card_held":
                    self.sandbox.set_fault(fault.host, "release", fault.value)
                elif fault.kind == "card_missing":
                    self.sandbox.set_fault(fault.host, "present", fault.value)
                elif fault.kind in ("slow_link", "port_down"):
                    self.sandbox.set_fault(fault.host, "clear")
                elif fault.kind == "daemon_json_invalid":
                    self._container(fault.host).exec_run(["sh", "-c", (
                        "if [ -e /etc/docker/daemon.json.rehearsal ]; then "
                        "mv /etc/docker/daemon.json.rehearsal /etc/docker/daemon.json; "
                        "else rm -f /etc/docker/daemon.json /etc/docker/daemon.json.rehearsal-absent; fi")])
                elif fault.kind == "host_lost" and fault.host in self.stopped:
                    self._container(fault.host).start()
            except Exception as err:  # undoing one fault must not keep the others from being undone
                self.log(f"could not undo fault {fault.kind} on {fault.host}: {err}")
            if self.facts_dir is not None:  # what preflight saw of the faulty host is no longer true
                (self.facts_dir / fault.host).unlink(missing_ok=True)
        if self.stopped:
            self.sandbox._wait_ready([s for s in self.sandbox.status() if s.name in self.stopped])


def rehearse(inventory: str | Path, limit: str | None = None, stages: list[str] | None = None,
             sample: int | None = None, faults: list[str] = (), keep: bool = False, name: str = DEFAULT_NAME,
             registry_port: int = DEFAULT_REGISTRY_PORT, state_root: Path | None = None,
             facts_dir: Path | None = None, junit: Path | None = None, log=print, on_result=None,
             vault_ids: list[str] | None = None, vault_password_files: list[str] | None = None,
             secrets=None) -> Report:
    """Rehearse `inventory` on a sandbox shaped like it; see the module's docstring. Raises Refused where the
    production inventory itself is refused (exit 2, as `up` would), ValueError for bad options."""
    import time

    from . import runner
    from .inventory import load_hosts
    from .paths import project_dir
    from .planner import plan_hosts
    from .sandbox import hub as sandbox_hub
    from .sandbox import vllm_image
    from .sandbox.fleet import HostSpec, Sandbox

    started = time.monotonic()
    project = project_dir()
    facts_dir = facts_dir or project / ".cache" / "facts"
    hosts, problems = load_hosts(inventory, facts_dir if facts_dir.is_dir() else None, limit)
    if problems:
        raise Refused(problems)
    production = plan_hosts(hosts)
    if not production.ok:
        raise Refused(production.errors)
    every_host = [h.name for h in load_hosts(inventory)[0]]
    chosen = sample_hosts(hosts, sample)
    chosen_hosts = [h for h in hosts if h.name in chosen]
    injected = [Fault.parse(text, chosen) for text in faults]
    all_stages = runner.known_stages(project)
    stages = list(stages or all_stages)
    unknown = [s for s in stages if s not in all_stages]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}: choose from {', '.join(all_stages)}")

    sandbox = Sandbox(name=name, state_root=state_root, registry_port=registry_port, log=log)
    state = sandbox.state / "rehearsal"
    state.mkdir(parents=True, exist_ok=True)
    specs = []
    for host in chosen_hosts:
        plan = production.hosts[host.name]
        base, shape = _shape(plan.platform, plan.accelerator)
        specs.append(HostSpec(name=host.name, profile=base, container=f"{name}-{host.name}", shape=shape))
    sandbox_inventory = state / "sandbox-inventory"
    statuses = sandbox.up(specs=specs, inventory_dir=sandbox_inventory)
    sandbox_vars = yaml.safe_load((sandbox_inventory / "hosts.yml").read_text())["all"]["vars"]
    registry = sandbox_vars["inferfleet_sandbox_registry"]
    local_image = vllm_image.rehearsal_image(sandbox.client, vllm_image.image_tag(), registry_port, log)
    image = f"{registry}/{local_image.split('/', 1)[1]}"
    models_dir = Path(sandbox_vars["inferfleet_sandbox_models_dir"])
    extra, rows, publish = substitutions(chosen_hosts, vllm_image.VLLM_VERSION, image, registry,
                                         sandbox_vars["inferfleet_sandbox_hub"], models_dir, state,
                                         os_facts(facts_dir, chosen))
    stand_ins = set(publish.values()) | {Path(entry["source"].removeprefix("file://"))
                                         for entry in extra["inferfleet_models"].values()
                                         if entry["source"].startswith("file://")}
    for directory in sorted(stand_ins):
        if directory.name.startswith(EMBED_STAND_IN.split("{")[0]) and not directory.exists():
            vllm_image.make_embed_stand_in(sandbox.client, vllm_image.image_tag(), models_dir,
                                           int(directory.name.rsplit("-", 1)[1]), log)
    for repo_id, directory in publish.items():
        sandbox_hub.publish(sandbox.hub_root, repo_id, directory)
    addresses = {s.name: s.address for s in statuses}
    extra.update(connection_vars(addresses, sandbox.key_path, every_host))
    extra.update({"inferfleet_sandbox": name, "inferfleet_sandbox_registry": registry,
                  "inferfleet_sandbox_fabric_dir": sandbox_vars["inferfleet_sandbox_fabric_dir"],
                  "inferfleet_sandbox_models_dir": str(models_dir)})
    extra["fabric_source"] = {"path": sandbox_vars["inferfleet_sandbox_fabric_dir"]}
    (state / "substitutions.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    for line in render_table(rows):
        log(line)

    report = Report(ok=False, hosts=chosen, stages=stages, substitutions=rows, directory=str(state))
    play_stage = stage_of_plays(project, all_stages)
    timing: dict[tuple[str, str], list[float]] = {}
    injector = _FaultInjector(sandbox, injected, log, state / "facts")
    reached: set[str] = set()

    def handle(result) -> None:
        stage = play_stage.get(result.play)
        if stage:
            now = time.monotonic()
            span = timing.setdefault((result.host, stage), [now, now])
            span[1] = now
            if stage not in reached:
                reached.add(stage)
                injector.on_stage(stage)
        if on_result:
            on_result(result)

    run_dir = None
    try:
        injector.apply()
        result = runner.up(inventory, stages=stages if stages != all_stages else None, limit=",".join(chosen),
                           extravars=extra, on_result=handle, fact_cache=state / "facts",
                           run_dir=runner.runs.create("rehearse", root=state / "runs"),
                           vault_ids=vault_ids, vault_password_files=vault_password_files, secrets=secrets)
        run_dir = result.run_dir
    finally:
        injector.undo()
    report.run_dir = str(run_dir) if run_dir else None
    report.errors = list(result.errors)

    # the plan the run applied (preflight saved it), against production's
    applied_path = Path(run_dir) / "plan.json" if run_dir else None
    if applied_path and applied_path.exists():
        applied = json.loads(applied_path.read_text())
    else:
        rehearsal_hosts, problems = load_hosts(inventory, state / "facts", ",".join(chosen), extra)
        applied = plan_hosts(rehearsal_hosts).to_dict() if not problems else {"hosts": {}, "hash": ""}
    # production's plan on the cards preflight discovered (the same discovery a real run plans on), else as
    # declared
    discovered, problems = load_hosts(inventory, state / "facts", ",".join(chosen))
    production_doc = (plan_hosts(discovered) if not problems else production).to_dict()
    replace = {}
    for host in chosen_hosts:
        if host.vars.get("ansible_host") and addresses.get(host.name):
            replace[str(host.vars["ansible_host"])] = addresses[host.name]
    first = chosen_hosts[0].vars if chosen_hosts else {}
    for value in (first.get("inferfleet_images") or {}).values():
        replace[str(value)] = image
    if first.get("inferfleet_front_door_image"):
        replace[str(first["inferfleet_front_door_image"])] = image
    versions = first.get("inferfleet_vllm_versions") or {}
    version_changed = {p for p, v in versions.items() if v != vllm_image.VLLM_VERSION}
    wanted = {h: production_doc["hosts"][h] for h in chosen if h in production_doc["hosts"]}
    declared, undeclared = plan_differences(wanted, applied.get("hosts", {}), replace, version_changed)
    report.plan = {"production_hash": production_doc["hash"], "rehearsal_hash": applied.get("hash", ""),
                   "declared": declared, "undeclared": undeclared}
    (state / "plan-diff.txt").write_text("\n".join(["# declared (substituted)"] + declared
                                                   + ["# undeclared"] + undeclared) + "\n")
    plan_case = Case("plan", "production plan", "plan")
    if undeclared:
        plan_case.failure = ("the rehearsal's plan differs from production's beyond the declared substitutions:\n"
                             + "\n".join(undeclared))
    elapsed = {key: span[1] - span[0] for key, span in timing.items()}
    report.cases = [plan_case] + cases(result.results, chosen, stages, play_stage, elapsed)
    report.elapsed = time.monotonic() - started
    report.ok = result.ok and not undeclared and all(c.failure is None for c in report.cases)
    document = junit_xml(report.cases)
    (state / "junit.xml").write_text(document)
    if junit:
        Path(junit).write_text(document)
    (state / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    (state / "summary.txt").write_text("\n".join(report.summary()) + "\n")
    if not keep:
        sandbox.down()
    return report
