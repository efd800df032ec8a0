"""Run inferfleet's playbooks through ansible-runner and return structured results."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import runs
from .paths import project_dir

# ansible-playbook's prompts, as ansible-runner matches them (re.M) to answer from `passwords`
VAULT_PROMPT = r"^Vault password:\s*?$"
BECOME_PROMPT = r"^BECOME password.*:\s*?$"
# The playbook each CLI command runs; the API names its run directories the same way.
COMMANDS = {"site.yml": "up", "playbooks/status.yml": "status", "playbooks/stop.yml": "down"}


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
    """Stage names in pipeline order, as site.yml tags them."""
    project = project or project_dir()
    plays = yaml.safe_load((project / "site.yml").read_text()) or []
    stages = []
    for play in plays:
        for tag in play.get("tags", []):
            if tag not in stages:
                stages.append(tag)
    return stages


def _status_of(event: str, res: dict) -> str | None:
    if event == "runner_on_ok":
        return "changed" if res.get("changed") else "ok"
    return {"runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
            "runner_on_skipped": "skipped"}.get(event)


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


def run_playbook(inventory: str | Path, playbook: str = "site.yml", stages: list[str] | None = None,
                 limit: str | None = None, check: bool = False, diff: bool = False,
                 extravars: dict | None = None,
                 on_result: Callable[[TaskResult], None] | None = None,
                 verbosity: int = 0, run_dir: Path | None = None, command: str | None = None,
                 vault_ids: list[str] | None = None, vault_password_files: list[str] | None = None,
                 secrets: Secrets | None = None,
                 on_output: Callable[[str], None] | None = None,
                 fact_cache: Path | None = None) -> RunResult:
    """Run `playbook` of the project against `inventory`; stream results to the callbacks as they come.

    The run is recorded in `run_dir` (default: a new one under runs.runs_root(), see runs.py); ansible-runner keeps
    its artifacts there and the playbook gets its path as `inferfleet_run_dir`. `on_output` receives Ansible's
    other output (what -v adds). `secrets` answer the prompts that --ask-vault-pass/-K/--vault-id X@prompt raise.
    `fact_cache`: another fact cache than the project's (a rehearsal keeps its simulated hosts' facts apart).
    """
    import ansible_runner

    project = project_dir()
    inventory = check_request(inventory, stages)
    options, passwords = ansible_options(vault_ids, vault_password_files, secrets)
    # Made only once the request is known good, so a refused one leaves no empty run behind.
    run_dir = Path(run_dir or runs.create(command or COMMANDS.get(playbook, Path(playbook).stem))).resolve()
    runs.update_record(run_dir, {"inventory": str(inventory), "playbook": playbook, "stages": stages, "limit": limit,
                                 "check": check, "diff": diff, "verbosity": verbosity})
    results: list[TaskResult] = []
    errors: list[str] = []
    stats: dict = {}

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
            if status:
                msg = res.get("msg", "") or ""
                msg = "\n".join(map(str, msg)) if isinstance(msg, list) else str(msg)
                result = TaskResult(host=data.get("host", "?"), task=data.get("task", ""), status=status,
                                    msg=_message(res) if status in ("failed", "unreachable") else msg, data=res,
                                    play=data.get("play", ""))
                results.append(result)
                if on_result:
                    on_result(result)
        return True

    cmdline = options
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    # The ansible-playbook of this Python's environment, which can import the inferfleet package.
    env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    envvars = {"ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0", "PATH": env_path}
    started = time.monotonic()
    try:
        run = ansible_runner.run(
            # runner keeps its artifacts (job events, stdout, the command) in artifacts/playbook/ of the run dir
            private_data_dir=str(run_dir), ident="playbook", project_dir=str(project),
            playbook=str(project / playbook), inventory=str(inventory), tags=",".join(stages) if stages else None,
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
            fact_cache=str(fact_cache or project / ".cache" / "facts"), fact_cache_type="jsonfile",
            event_handler=handle, quiet=True, verbosity=verbosity,
            settings={"suppress_ansible_output": True},
        )
    except BaseException as err:
        # a crash or Ctrl-C still leaves a finished record, so pruning and `inferfleet runs` see it ended
        runs.update_record(run_dir, {"finished": runs.timestamp(datetime.now(timezone.utc)), "ok": False,
                                     "elapsed": round(time.monotonic() - started, 3),
                                     "status": f"error: {type(err).__name__}"})
        raise
    finally:
        _scrub_command_artifact(run_dir / "artifacts" / "playbook", envvars)
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
    """Run the pipeline (site.yml), optionally only some stages."""
    return run_playbook(inventory, "site.yml", stages=stages, limit=limit, check=check, diff=diff, **kwargs)
