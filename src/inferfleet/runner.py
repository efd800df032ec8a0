"""Run inferfleet's playbooks through ansible-runner and return structured results."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .paths import project_dir


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


@dataclass
class RunResult:
    rc: int
    status: str
    elapsed: float
    hosts: dict[str, HostRecap]
    results: list[TaskResult]
    # Errors Ansible printed outside any task (syntax errors, bad options), which no host result carries.
    errors: list[str] = field(default_factory=list)

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
            "errors": self.errors,
        }


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


def run_playbook(inventory: str | Path, playbook: str = "site.yml", stages: list[str] | None = None,
                 limit: str | None = None, check: bool = False, diff: bool = False,
                 extravars: dict | None = None,
                 on_result: Callable[[TaskResult], None] | None = None,
                 verbosity: int = 0) -> RunResult:
    """Run `playbook` of the project against `inventory`; stream results to the callbacks as they come."""
    import ansible_runner

    project = project_dir()
    inventory = Path(inventory).resolve()
    if not inventory.exists():
        raise FileNotFoundError(f"inventory {inventory} does not exist")
    if stages:
        known = known_stages(project)
        unknown = [s for s in stages if s not in known]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}: known are {', '.join(known)}")
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
        else:
            res = data.get("res", {}) if isinstance(data.get("res"), dict) else {}
            status = _status_of(name, res)
            if status:
                msg = res.get("msg", "") or ""
                msg = "\n".join(map(str, msg)) if isinstance(msg, list) else str(msg)
                result = TaskResult(host=data.get("host", "?"), task=data.get("task", ""), status=status,
                                    msg=_message(res) if status in ("failed", "unreachable") else msg, data=res)
                results.append(result)
                if on_result:
                    on_result(result)
        return True

    cmdline = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    # The ansible-playbook of this Python's environment, which can import the inferfleet package.
    env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inferfleet-run-") as private:
        run = ansible_runner.run(
            private_data_dir=private, project_dir=str(project), playbook=str(project / playbook),
            inventory=str(inventory), tags=",".join(stages) if stages else None, limit=limit,
            extravars=extravars or {}, cmdline=" ".join(cmdline) or None,
            envvars={"ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0", "PATH": env_path},
            # runner would keep facts in its temporary artifacts; keep them where ansible.cfg does, so
            # `inferfleet plan` reads the cards preflight discovered
            fact_cache=str(project / ".cache" / "facts"), fact_cache_type="jsonfile",
            event_handler=handle, quiet=True, verbosity=verbosity,
            settings={"suppress_ansible_output": True, "suppress_output_file": True},
        )
    hosts: dict[str, HostRecap] = {}
    mapping = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
               "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}
    for key, attr in mapping.items():
        for host, count in (stats.get(key) or {}).items():
            recap = hosts.setdefault(host, HostRecap(host))
            setattr(recap, attr, count)
    rc = run.rc if run.rc is not None else 1
    return RunResult(rc=rc, status=run.status, elapsed=time.monotonic() - started, hosts=hosts, results=results,
                     errors=errors)


def up(inventory: str | Path, stages: list[str] | None = None, limit: str | None = None,
       check: bool = False, diff: bool = False, **kwargs) -> RunResult:
    """Run the pipeline (site.yml), optionally only some stages."""
    return run_playbook(inventory, "site.yml", stages=stages, limit=limit, check=check, diff=diff, **kwargs)
