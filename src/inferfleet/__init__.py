"""inferfleet: take bare accelerator hosts to tuned, verified, serving vLLM endpoints.

The Python API runs the same playbooks as the CLI and returns structured results:

    from inferfleet import Sandbox, up
    sandbox = Sandbox()
    sandbox.up(profile_names=["gaudi2", "cpu"])
    result = up("inventories/sandbox/hosts.yml", stages=["preflight"])
    assert result.ok, result.failures
"""

from .inventory import load_hosts
from .planner import plan_hosts
from .runner import HostRecap, RunResult, TaskResult, known_stages, run_playbook, up
from .sandbox.fleet import Sandbox
from .schema import Problem
from .schema import validate_settings as validate_host

__version__ = "0.1.0"
__all__ = [
    "HostRecap", "Problem", "RunResult", "Sandbox", "TaskResult", "known_stages", "load_hosts", "plan_hosts",
    "run_playbook", "up", "validate_host",
]
