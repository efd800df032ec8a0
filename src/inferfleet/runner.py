"""Run inferfleet's playbooks through ansible-runner and return structured results."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import runs
from .paths import cache_dir, pipeline, project_dir

# ansible-playbook's prompts, as ansible-runner matches them (re.M) to answer from `passwords`
VAULT_PROMPT = r"^Vault password:\s*?$"
BECOME_PROMPT = r"^BECOME password.*:\s*?$"
# The playbook each CLI command runs; the API names its run directories the same way.
COMMANDS = {"site.yml": "up", "playbooks/status.yml": "status", "playbooks/stop.yml": "down"}
# ansible-runner runs ansible-playbook in a container (an execution environment) with these engines
CONTAINER_ENGINES = ("docker", "podman")
# What ARA must not keep of a recorded run: -e (where users put tokens) and the paths of password files (the
# passwords themselves never reach ansible-playbook's arguments: they answer its prompts, see Secrets).
ARA_IGNORED_ARGUMENTS = ("extra_vars", "vault_password_files", "vault_ids", "become_password_file",
                         "connection_password_file")
# host facts: the controller's and hosts' environment variables (ARA's own default)
ARA_IGNORED_FACTS = ("ansible_env",)
# files ARA would store the content of: Ansible's temporary files (ARA's default), vault and secret files
ARA_IGNORED_FILES = (".ansible/tmp", "vault", "secret")


@dataclass
class HostRecap:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def healthy(self) -> bool:
        return self.failed == 0 and self.unreachable == 0


@dataclass
class TaskResult:
    host: str
    task: str
    status: str  # ok, changed, failed, unreachable, skipped
    msg: str = ""
    data: dict = field(default_factory=dict)
    play: str = ""  # the play's name (each stage's playbook names its plays)


@dataclass
class RunResult:
    rc: int
    status: str
    elapsed: float
    hosts: dict[str, HostRecap]
    results: list[TaskResult]
    # Errors Ansible printed outside any task (syntax errors, bad options), which no host result carries.
    errors: list[str] = field(default_factory=list)
    # Where runner's artifacts, run.json and the CLI's log.txt are (see runs.py)
    run_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and all(h.healthy for h in self.hosts.values())

    @property
    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.status in ("failed", "unreachable")]

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    def facts(self, host: str, key: str):
        """The last value of ansible_facts[key] a task returned for `host` (None when none did)."""
        for result in reversed(self.results):
            if result.host == host and key in result.data.get("ansible_facts", {}):
                return result.data["ansible_facts"][key]
        return None

    def to_dict(self) -> dict:
        return {
            "rc": self.rc, "status": self.status, "ok": self.ok, "elapsed": round(self.elapsed, 3),
            "hosts": {name: asdict(recap) for name, recap in self.hosts.items()},
            "failures": [{"host": f.host, "task": f.task, "msg": f.msg} for f in self.failures],
            "errors": self.errors, "run_dir": str(self.run_dir) if self.run_dir else None,
        }


@dataclass
class Secrets:
    """Answers to ansible-playbook's password prompts. Held in memory only: never in argv, env, files or repr."""

    vault: str | None = None  # --ask-vault-pass
    become: str | None = None  # -K/--ask-become-pass
    vault_ids: dict[str, str] = field(default_factory=dict)  # label -> password, for --vault-id LABEL@prompt

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


def known_stages(project: Path | None = None) -> list[str]:
    """Stage names in pipeline order, as the pipeline (playbooks/site.yml) tags them."""
    stages = []
    for tags, _book in pipeline(project or project_dir()):
        for tag in tags:
            if tag not in stages:
                stages.append(tag)
    return stages


def _status_of(event: str, res: dict) -> str | None:
    if event == "runner_on_ok":
        return "changed" if res.get("changed") else "ok"
    return {"runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
            "runner_on_skipped": "skipped"}.get(event)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours in Ansible's lines


def _shown_changed(stdout: str | None) -> bool:
    """Whether Ansible's own line for a result says changed. ansible-runner replaces a no_log result with
    {'censored': ...}, its `changed` included; the line Ansible printed still says it."""
    return ANSI.sub("", stdout or "").lstrip().startswith("changed:")


def _message(res: dict) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if isinstance(msg, list):
        msg = "; ".join(str(m) for m in msg)
    return str(msg).strip()


def check_request(inventory: str | Path, stages: list[str] | None = None) -> Path:
    """The inventory's absolute path; FileNotFoundError when it is missing, ValueError for an unknown stage."""
    inventory = Path(inventory).resolve()
    if not inventory.exists():
        raise FileNotFoundError(f"inventory {inventory} does not exist")
    if stages:
        known = known_stages()
        unknown = [s for s in stages if s not in known]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}: known are {', '.join(known)}")
    return inventory


def _split_vault_id(vault_id: str) -> tuple[str, str]:
    # as ansible splits it: LABEL@SOURCE, or SOURCE alone with the label "default"
    label, sep, source = vault_id.partition("@")
    return (label or "default", source) if sep else ("default", vault_id)


def prompted_vault_labels(vault_ids: list[str] | None) -> list[str]:
    """Labels of the --vault-id LABEL@prompt options, whose passwords ansible-playbook will ask for."""
    return [label for label, source in map(_split_vault_id, vault_ids or []) if source == "prompt"]


def vault_options(vault_ids: list[str] | None = None, vault_password_files: list[str] | None = None) -> list[str]:
    """--vault-id and --vault-password-file for ansible-playbook, the files checked and their paths made absolute:
    ansible-playbook runs in the project directory, not where the user typed them."""
    options: list[str] = []
    for vault_id in vault_ids or []:
        label, source = _split_vault_id(vault_id)
        if source != "prompt":
            path = Path(source).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"--vault-id {vault_id}: {source} is not a file "
                                        "(give LABEL@FILE, LABEL@prompt or FILE)")
            source = str(path.resolve())
        options += ["--vault-id", f"{label}@{source}" if "@" in vault_id else source]
    for name in vault_password_files or []:
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--vault-password-file {name} is not a file")
        options += ["--vault-password-file", str(path.resolve())]
    return options


def ansible_options(vault_ids: list[str] | None = None, vault_password_files: list[str] | None = None,
                    secrets: Secrets | None = None) -> tuple[list[str], dict[str, str]]:
    """ansible-playbook options for vault and become, and runner's `passwords` (prompt regex -> answer)."""
    secrets = secrets or Secrets()
    cmdline = vault_options(vault_ids, vault_password_files)
    passwords: dict[str, str] = {}
    for label in prompted_vault_labels(vault_ids):
        if label not in secrets.vault_ids:
            raise ValueError(f"--vault-id {label}@prompt asks for a password: give it in "
                             f"secrets.vault_ids[{label!r}]")
        passwords[rf"^Vault password \({re.escape(label)}\):\s*?$"] = secrets.vault_ids[label]
    if secrets.vault is not None:
        cmdline.append("--ask-vault-pass")
        passwords[VAULT_PROMPT] = secrets.vault
    if secrets.become is not None:
        cmdline.append("--ask-become-pass")
        passwords[BECOME_PROMPT] = secrets.become
    return cmdline, passwords


def _scrub_command_artifact(artifact_dir: Path, envvars: dict) -> None:
    """runner's `command` artifact holds this process's whole environment, tokens and keys included, and the run
    directory is kept: leave the values inferfleet and runner set, and only the names of the inherited ones."""
    path = artifact_dir / "command"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    env = data.get("env") or {}
    data["env"] = {key: value for key, value in env.items() if key in envvars or key not in os.environ}
    data["env_inherited"] = sorted(key for key in env if key not in data["env"])
    path.write_text(json.dumps(data))


def _merge_list(*values: str | Sequence[str] | None) -> str:
    """Comma-separated, in order, without repeats: how Ansible and ARA read list settings from the environment."""
    items: list[str] = []
    for value in values:
        parts = value.split(",") if isinstance(value, str) else (value or [])
        for part in (p.strip() for p in parts):
            if part and part not in items:
                items.append(part)
    return ",".join(items)


def _config_default(project: Path, *keys: str) -> str | None:
    """A [defaults] setting of the project's ansible.cfg (the first of `keys` set), as ansible-playbook reads it."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    try:
        parser.read(project / "ansible.cfg")
    except configparser.Error:
        return None
    for key in keys:
        if parser.has_option("defaults", key):
            return parser.get("defaults", key)
    return None


def ara_settings(record: bool | str, project: Path | None = None) -> dict[str, str]:
    """The environment that makes ansible-playbook record the run with ARA's callback (pip install inferfleet[record]).

    `record`: True records into the local database, $ARA_DATABASE_NAME if set, else ansible.sqlite in $ARA_BASE_DIR
    if set, else <cache>/ara/ansible.sqlite (<project>/.cache in a checkout, see paths.cache_dir()); a string is the
    URL of an ARA API server to send the run to. The callbacks ansible.cfg (or $ANSIBLE_CALLBACKS_ENABLED) enables
    stay enabled. ARA keeps neither -e nor the paths of password files (ARA_IGNORED_ARGUMENTS), nor the hosts'
    environment (ARA_IGNORED_FACTS), nor files named like vault or secret files (ARA_IGNORED_FILES); what the user's
    own ARA_IGNORED_* add is kept. The results of `no_log: true` tasks reach ARA censored, as they reach any callback.
    """
    try:
        from ara.setup import callback_plugins
    except ImportError as err:
        raise ValueError("recording a run needs ARA: pip install 'inferfleet[record]' (or 'ara[server]')") from err
    project = project or project_dir()
    enabled = os.environ.get("ANSIBLE_CALLBACKS_ENABLED") or _config_default(
        project, "callbacks_enabled", "callback_whitelist")
    plugins = os.environ.get("ANSIBLE_CALLBACK_PLUGINS") or _config_default(project, "callback_plugins")
    env = {
        "ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join(filter(None, (plugins, callback_plugins))),
        "ANSIBLE_CALLBACKS_ENABLED": _merge_list(enabled, ["ara_default"]),
        "ARA_IGNORED_ARGUMENTS": _merge_list(ARA_IGNORED_ARGUMENTS, os.environ.get("ARA_IGNORED_ARGUMENTS")),
        "ARA_IGNORED_FACTS": _merge_list(ARA_IGNORED_FACTS, os.environ.get("ARA_IGNORED_FACTS")),
        "ARA_IGNORED_FILES": _merge_list(ARA_IGNORED_FILES, os.environ.get("ARA_IGNORED_FILES")),
    }
    if isinstance(record, str):
        if not re.match(r"^https?://", record):
            raise ValueError(f"record={record!r}: give True (a local database) or an ARA API server's http(s):// URL")
        env.update({"ARA_API_CLIENT": "http", "ARA_API_SERVER": record.rstrip("/")})
    else:
        base = Path(os.environ.get("ARA_BASE_DIR") or cache_dir() / "ara").expanduser().resolve()
        database = Path(os.environ.get("ARA_DATABASE_NAME") or base / "ansible.sqlite").expanduser().resolve()
        base.mkdir(parents=True, exist_ok=True)
        database.parent.mkdir(parents=True, exist_ok=True)
        env.update({"ARA_API_CLIENT": "offline", "ARA_BASE_DIR": str(base), "ARA_DATABASE_NAME": str(database)})
    return env


def _under(path: Path, parents: list[Path]) -> bool:
    return any(path == parent or parent in path.parents for parent in parents)


def _container_inventory(run_dir: Path, inventory: Path) -> None:
    """runner hands a containerized ansible-playbook `-i /runner/inventory`, the run dir's inventory/: make that the
    user's inventory, by links to paths the container sees at the same place (see run_playbook)."""
    link = run_dir / "inventory"
    if link.is_symlink() or link.is_file():
        link.unlink()
    if inventory.is_dir():
        if not link.exists():
            link.symlink_to(inventory, target_is_directory=True)
        return
    # a file: a directory of it, and the directories Ansible reads beside it (vars, and the files services name)
    link.mkdir(exist_ok=True)
    (link / inventory.name).symlink_to(inventory)
    for name in ("group_vars", "host_vars", "model_configs", "env_files", "files"):
        if (inventory.parent / name).is_dir():
            (link / name).symlink_to(inventory.parent / name, target_is_directory=True)


def run_playbook(inventory: str | Path, playbook: str = "site.yml", stages: list[str] | None = None,
                 limit: str | None = None, check: bool = False, diff: bool = False,
                 extravars: dict | None = None,
                 on_result: Callable[[TaskResult], None] | None = None,
                 verbosity: int = 0, run_dir: Path | None = None, command: str | None = None,
                 vault_ids: list[str] | None = None, vault_password_files: list[str] | None = None,
                 secrets: Secrets | None = None,
                 on_output: Callable[[str], None] | None = None,
                 fact_cache: Path | None = None,
                 event_handler: Callable[[dict], bool | None] | None = None,
                 cancel_callback: Callable[[], bool] | None = None,
                 status_handler: Callable[..., None] | None = None,
                 artifact_dir: str | Path | None = None,
                 process_isolation: bool = False,
                 process_isolation_executable: str | None = None,
                 container_image: str | None = None,
                 container_options: list[str] | None = None,
                 container_volume_mounts: list[str] | None = None,
                 record: bool | str | None = None) -> RunResult:
    """Run `playbook` of the project against `inventory`; stream results to the callbacks as they come.

    `playbook` is relative to the project directory (paths.project_dir()), or an absolute path.
    The run is recorded in `run_dir` (default: a new one under runs.runs_root(), see runs.py); ansible-runner keeps
    its artifacts there and the playbook gets its path as `inferfleet_run_dir`. `on_output` receives Ansible's
    other output (what -v adds). `secrets` answer the prompts that --ask-vault-pass/-K/--vault-id X@prompt raise.
    `fact_cache`: another fact cache than the project's (a rehearsal keeps its simulated hosts' facts apart).

    ansible-runner's own options, passed to ansible_runner.run as they are:

    `event_handler(event)`: called with each raw runner event (a dict: event, event_data, stdout, ...), after
    inferfleet's own handling (which fills the RunResult and calls on_result/on_output). As with runner, its
    return value decides whether runner saves the event in artifacts/<ident>/job_events/: a false one (False, and
    None too) means not saved; the RunResult is complete either way.
    `cancel_callback()`: polled while ansible-playbook runs; returning True stops it. The RunResult then has
    status "canceled" (rc 254) and is not ok.
    `status_handler(status_data, runner_config=...)`: called on each status change (starting, running,
    successful, failed, canceled, timeout); status_data holds "status" and "runner_ident".
    `artifact_dir`: where runner keeps its artifacts (job events, stdout, command), in <artifact_dir>/playbook/;
    default: <run_dir>/artifacts.
    `process_isolation`, `process_isolation_executable` ("podman", runner's default, or "docker"),
    `container_image` (an execution environment holding ansible-core, inferfleet and its collection),
    `container_options` (extra arguments of `docker/podman run`) and `container_volume_mounts` ("SRC:DEST[:OPTS]"):
    run ansible-playbook in a container. The container gets the project directory, the run directory, the fact
    cache, the inventory (and the ARA database when recording) mounted at their own paths, so the playbook, its
    ansible.cfg, `inferfleet_run_dir` and the facts are where the host has them; the host's PATH is not passed
    (the image's ansible-playbook runs); runner's `-i /runner/inventory` links to the inventory. A custom
    `artifact_dir` is mounted at /runner/artifacts, where runner writes the events from inside.

    `record`: also record the run with ARA (pip install 'inferfleet[record]'): True into a local database,
    $ARA_DATABASE_NAME or <cache>/ara/ansible.sqlite; a string is an ARA API server's URL. See ara_settings().
    Secrets stay out of it: passwords only answer prompts (never on the command line), -e is not recorded,
    `no_log: true` results reach ARA censored.
    """
    import ansible_runner

    project = project_dir()
    inventory = check_request(inventory, stages)
    options, passwords = ansible_options(vault_ids, vault_password_files, secrets)
    engine = process_isolation_executable or "podman"
    containerized = bool(process_isolation) and engine in CONTAINER_ENGINES
    if containerized and not container_image:
        raise ValueError(f"process_isolation with {engine} runs ansible-playbook in a container: give container_image "
                         "(an execution environment with ansible-core and inferfleet)")
    ara_env = ara_settings(record, project) if record else {}
    # Made only once the request is known good, so a refused one leaves no empty run behind.
    run_dir = Path(run_dir or runs.create(command or COMMANDS.get(playbook, Path(playbook).stem))).resolve()
    runs.update_record(run_dir, {"inventory": str(inventory), "playbook": playbook, "stages": stages, "limit": limit,
                                 "check": check, "diff": diff, "verbosity": verbosity,
                                 **({"record": record if isinstance(record, str) else ara_env["ARA_DATABASE_NAME"]}
                                    if record else {}),
                                 **({"container_image": container_image} if containerized else {})})
    results: list[TaskResult] = []
    errors: list[str] = []
    stats: dict = {}
    censored_changed: set[tuple[str, str]] = set()  # (host, task) of no_log loop items Ansible showed as changed

    def handle(event: dict) -> bool:
        name = event.get("event", "")
        data = event.get("event_data", {})
        if name == "playbook_on_stats":
            stats.update(data)
        elif name in ("verbose", "error") and "ERROR" in event.get("stdout", ""):
            errors.append(event["stdout"].strip())
        elif name == "verbose":
            if on_output and event.get("stdout", "").strip():
                on_output(event["stdout"].rstrip())
        else:
            res = data.get("res", {}) if isinstance(data.get("res"), dict) else {}
            status = _status_of(name, res)
            if "censored" in res and name in ("runner_item_on_ok", "runner_on_ok"):
                shown = (data.get("host"), data.get("task_uuid"))
                if _shown_changed(event.get("stdout")):
                    censored_changed.add(shown)
                if status == "ok" and shown in censored_changed:
                    status = "changed"
            if status:
                msg = res.get("msg", "") or ""
                msg = "\n".join(map(str, msg)) if isinstance(msg, list) else str(msg)
                result = TaskResult(host=data.get("host", "?"), task=data.get("task", ""), status=status,
                                    msg=_message(res) if status in ("failed", "unreachable") else msg, data=res,
                                    play=data.get("play", ""))
                results.append(result)
                if on_result:
                    on_result(result)
        if event_handler is not None:
            # runner's contract: the user's answer decides whether the event is saved
            return event_handler(event)
        return True

    cmdline = options
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    playbook_path = project / playbook  # an absolute `playbook` stays itself
    fact_cache = Path(fact_cache or project / ".cache" / "facts").resolve()
    envvars = {"ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0", **ara_env}
    mounts = list(container_volume_mounts or [])
    if containerized:
        # No host PATH: the image's ansible-playbook runs. Every host path the run names is mounted at itself; runner
        # would keep facts in /runner/artifacts, and its environment yields to envvars.
        envvars["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(fact_cache)
        fact_cache.mkdir(parents=True, exist_ok=True)
        mounted: list[Path] = []
        needed = [project, run_dir, fact_cache, playbook_path.parent,
                  inventory if inventory.is_dir() else inventory.parent]
        if ara_env.get("ARA_API_CLIENT") == "offline":
            needed += [Path(ara_env["ARA_DATABASE_NAME"]).parent, Path(ara_env["ARA_BASE_DIR"])]
        for path in needed:
            if not _under(path, mounted):
                mounted.append(path)
                mounts.append(f"{path}:{path}")
        if ara_env:
            # ARA's callback as the host has it (the image must have the ara package it imports)
            from ara.setup import callback_plugins
            mounts.append(f"{callback_plugins}:{callback_plugins}:ro")
        if artifact_dir is not None:
            mounts.append(f"{Path(artifact_dir).resolve()}:/runner/artifacts")
        _container_inventory(run_dir, inventory)
    else:
        # The ansible-playbook of this Python's environment, which can import the inferfleet package.
        envvars["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    artifacts_root = Path(artifact_dir).resolve() if artifact_dir is not None else run_dir / "artifacts"
    container = {"process_isolation": True, "process_isolation_executable": engine,
                 "container_image": container_image, "container_options": list(container_options or []) or None,
                 "container_volume_mounts": mounts or None} if process_isolation else {}
    # only those given: runner's defaults otherwise
    handlers = {key: value for key, value in (("cancel_callback", cancel_callback),
                                              ("status_handler", status_handler)) if value is not None}
    started = time.monotonic()
    try:
        run = ansible_runner.run(
            # runner keeps its artifacts (job events, stdout, the command) in artifacts/playbook/ of the run dir
            private_data_dir=str(run_dir), ident="playbook", project_dir=str(project),
            artifact_dir=str(artifacts_root),
            playbook=str(playbook_path), inventory=str(inventory), tags=",".join(stages) if stages else None,
            limit=limit, extravars={**(extravars or {}), "inferfleet_run_dir": str(run_dir)},
            # runner splits cmdline with shlex: quoted, so paths with spaces stay one argument
            cmdline=shlex.join(cmdline) or None,
            # Secrets only through `passwords`, which runner answers the prompts with over its pty (cmdline, envvars
            # and extravars all land in artifacts/playbook/command). suppress_env_files: else runner first dumps
            # passwords (and the rest) as files into env/ of the run dir, to keep.
            passwords=passwords or None, suppress_env_files=True,
            envvars=envvars,
            # runner would keep facts in its artifacts; keep them where ansible.cfg does, so
            # `inferfleet plan` reads the cards preflight discovered
            fact_cache=str(fact_cache), fact_cache_type="jsonfile",
            event_handler=handle, quiet=True, verbosity=verbosity,
            settings={"suppress_ansible_output": True},
            **container, **handlers,
        )
    except BaseException as err:
        # a crash or Ctrl-C still leaves a finished record, so pruning and `inferfleet runs` see it ended
        runs.update_record(run_dir, {"finished": runs.timestamp(datetime.now(timezone.utc)), "ok": False,
                                     "elapsed": round(time.monotonic() - started, 3),
                                     "status": f"error: {type(err).__name__}"})
        raise
    finally:
        _scrub_command_artifact(artifacts_root / "playbook", envvars)
    hosts: dict[str, HostRecap] = {}
    mapping = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
               "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}
    for key, attr in mapping.items():
        for host, count in (stats.get(key) or {}).items():
            recap = hosts.setdefault(host, HostRecap(host))
            setattr(recap, attr, count)
    rc = run.rc if run.rc is not None else 1
    result = RunResult(rc=rc, status=run.status, elapsed=time.monotonic() - started, hosts=hosts, results=results,
                       errors=errors, run_dir=run_dir)
    runs.update_record(run_dir, {"finished": runs.timestamp(datetime.now(timezone.utc)),
                                 "elapsed": round(result.elapsed, 3), "rc": rc, "status": run.status, "ok": result.ok,
                                 "recap": {name: asdict(recap) for name, recap in sorted(hosts.items())},
                                 "failures": [{"host": f.host, "task": f.task, "msg": f.msg} for f in result.failures],
                                 "errors": errors})
    return result


def up(inventory: str | Path, stages: list[str] | None = None, limit: str | None = None,
       check: bool = False, diff: bool = False, **kwargs) -> RunResult:
    """Run the pipeline (site.yml), optionally only some stages; `kwargs` are run_playbook's (event_handler,
    cancel_callback, status_handler, artifact_dir, process_isolation and the container_* options, record, ...)."""
    return run_playbook(inventory, "site.yml", stages=stages, limit=limit, check=check, diff=diff, **kwargs)
