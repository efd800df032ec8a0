# Copyright: inferfleet contributors
# Apache License 2.0
"""Action plugin: validate a host's inferfleet inventory variables on the controller, before any connection.

It imports the inferfleet package so that the CLI, the API and the playbooks judge an inventory the same way.
"""


from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

try:
    from inferfleet.inventory import validate_host
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    validate_host = None
    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None


VALIDATED_PREFIXES = ("inferfleet_", "host_tuning_", "docker_engine_", "accel_runtime_")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if validate_host is None:
            raise AnsibleActionFail("the inferfleet Python package is not importable on the controller: %s "
                                    "(install it with `pip install -e .` in the project)" % IMPORT_ERROR)
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "?")
        names = [k for k in task_vars if k.startswith(VALIDATED_PREFIXES)]
        host_vars = dict((k, self._templar.template(task_vars[k])) for k in names)
        groups = task_vars.get("group_names", [])
        problems = validate_host(host, host_vars, groups)
        result["changed"] = False
        result["problems"] = [p.to_dict() for p in problems]
        if problems:
            result["failed"] = True
            result["msg"] = "inventory for %s is invalid:\n  - %s" % (host, "\n  - ".join(str(p) for p in problems))
        else:
            result["msg"] = "inventory variables of %s are valid" % host
        return result
