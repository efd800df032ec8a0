# Copyright: inferfleet contributors
# Apache License 2.0
"""Filters for the tune stage's verification table; the logic lives in inferfleet.tuning (unit-tested)."""

from ansible.errors import AnsibleFilterError

IMPORT_ERROR = None
try:
    from inferfleet.tuning import render_rows, sysctl_drift, tuning_rows
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    tuning_rows = render_rows = sysctl_drift = None
    IMPORT_ERROR = exc


def _require():
    if tuning_rows is None:
        raise AnsibleFilterError("the inferfleet Python package is not importable on the controller: %s (install "
                                 "it with `pip install inferfleet`, or run in the inferfleet EE)" % IMPORT_ERROR)


def inferfleet_tuning_rows(wanted, cpu, cmdline, sysctl_now, sysctl_file, boot_unit):
    _require()
    if isinstance(sysctl_file, list):
        sysctl_file = "\n".join(sysctl_file)
    return tuning_rows(wanted, cpu, cmdline or None, sysctl_now, sysctl_file, bool(boot_unit))


def inferfleet_sysctl_drift(wanted, sysctl_now, sysctl_file):
    _require()
    if isinstance(sysctl_file, list):
        sysctl_file = "\n".join(sysctl_file)
    return sysctl_drift(wanted, sysctl_now, sysctl_file)


def inferfleet_render_rows(rows):
    _require()
    return render_rows(rows)


class FilterModule:
    def filters(self):
        return {"tuning_rows": inferfleet_tuning_rows, "render_rows": inferfleet_render_rows,
                "sysctl_drift": inferfleet_sysctl_drift}
