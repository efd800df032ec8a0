#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0


DOCUMENTATION = r"""
---
module: kernel_cmdline
short_description: Merge arguments into the kernel command line in /etc/default/grub
description:
  - Adds or replaces kernel arguments in a variable of C(/etc/default/grub) (by default
    C(GRUB_CMDLINE_LINUX_DEFAULT)), removes the ones asked for, and keeps every other argument exactly as the
    user wrote it. A key is never duplicated; a second occurrence of a key we manage is dropped.
  - Compares the wanted arguments with the running kernel's C(/proc/cmdline) and returns C(reboot_required)
    with the reasons, also when nothing changed in the file (a previous run changed it but no reboot followed).
  - Does not regenerate the boot loader configuration; run C(update-grub) or C(grub2-mkconfig) when
    C(changed) is true.
  - Warns when a file in C(/etc/default/grub.d/) assigns the same variable, since it would override the change.
  - Supports check mode and diff mode; keeps a backup of the file when asked.
options:
  path:
    description: The GRUB defaults file.
    type: path
    default: /etc/default/grub
  variable:
    description: The shell variable holding the arguments.
    type: str
    default: GRUB_CMDLINE_LINUX_DEFAULT
  arguments:
    description:
      - Arguments to add or replace, as a mapping of key to value. A null value means a bare flag (C(quiet)).
    type: dict
    default: {}
  remove:
    description: Keys to remove (with any value).
    type: list
    elements: str
    default: []
  create:
    description:
      - Create the file when it does not exist. With C(false) a missing file is reported in C(exists) and left
        alone (a host that boots without GRUB).
    type: bool
    default: true
  backup:
    description: Keep a timestamped copy of the file before changing it.
    type: bool
    default: true
  proc_cmdline:
    description: Where to read the running command line. Change it only for tests.
    type: path
    default: /proc/cmdline
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
author:
  - inferfleet contributors (@inferfleet)
"""

EXAMPLES = r"""
- name: Boot with the performance governor and without deep C-states (seed 004)
  kernel_cmdline:
    arguments:
      cpufreq.default_governor: performance
      intel_idle.max_cstate: 0
  register: cmdline
  notify: Regenerate the GRUB configuration

- name: Drop an argument
  kernel_cmdline:
    remove: [intel_iommu]
"""

RETURN = r"""
cmdline:
  description: The value of the variable after the change (the current one in check mode when unchanged).
  returned: always
  type: str
  sample: quiet splash cpufreq.default_governor=performance
running:
  description: The running kernel's command line.
  returned: always
  type: str
added:
  description: Arguments appended.
  returned: always
  type: list
  sample: [cpufreq.default_governor=performance]
replaced:
  description: Arguments whose value changed, as "old -> new".
  returned: always
  type: list
  sample: ["intel_idle.max_cstate=1 -> intel_idle.max_cstate=0"]
removed:
  description: Arguments removed (including duplicates of managed keys).
  returned: always
  type: list
reboot_required:
  description: True when the running kernel lacks a wanted argument or still has a removed one.
  returned: always
  type: bool
reboot_reasons:
  description: One line per argument that is not in effect yet.
  returned: always
  type: list
  sample: ["cpufreq.default_governor=performance is not on the running kernel's command line"]
overridden_by:
  description: Files in /etc/default/grub.d that assign the same variable.
  returned: always
  type: list
exists:
  description: Whether the file existed before the run.
  returned: always
  type: bool
backup_file:
  description: The backup made, when the file changed and backup is true.
  returned: changed and backup
  type: str
"""

import glob
import os
import re

from ansible.module_utils.basic import AnsibleModule


def split_args(text):
    """Split a kernel command line the way the kernel does: on blanks, except inside double quotes."""
    args, current, quoted, started = [], [], False, False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if started:
                args.append("".join(current))
                current, started = [], False
            continue
        current.append(char)
        started = True
    if started:
        args.append("".join(current))
    return args


def arg_key(arg):
    return arg.split("=", 1)[0]


def format_arg(key, value):
    if value is None:
        return key
    if isinstance(value, bool):
        value = "1" if value else "0"
    return "%s=%s" % (key, value)


def merge_args(current, arguments, remove=()):
    """Merge wanted arguments into a list of arguments; returns (merged, added, replaced, removed).

    Every argument whose key we do not manage stays where it is, as written. A managed key keeps the position
    of its first occurrence; later occurrences are dropped."""
    wanted = {key: format_arg(key, value) for key, value in arguments.items()}
    remove = set(remove)
    merged, added, replaced, removed, seen = [], [], [], [], set()
    for arg in current:
        key = arg_key(arg)
        if key in remove:
            removed.append(arg)
        elif key in wanted:
            if key in seen:
                removed.append(arg)
                continue
            seen.add(key)
            if arg != wanted[key]:
                replaced.append("%s -> %s" % (arg, wanted[key]))
            merged.append(wanted[key])
        else:
            merged.append(arg)
    for key, arg in wanted.items():
        if key not in seen:
            merged.append(arg)
            added.append(arg)
    return merged, added, replaced, removed


ASSIGNMENT = r"^(?P<indent>\s*)(?P<export>export\s+)?%s=(?P<value>.*?)\s*$"


def parse_shell_value(raw):
    """The value of a simple shell assignment's right-hand side and its quote character ('"', "'" or '')."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        quote, body = raw[0], raw[1:-1]
        if quote == '"':
            body = re.sub(r'\\(["\\$`])', r"\1", body)
        return body, quote
    return raw, ""


def quote_for_double(value):
    """Escape for double quotes but keep $VAR references (users write GRUB_CMDLINE_X="$GRUB_CMDLINE_X foo")."""
    return '"%s"' % re.sub(r'(["\\`])', r"\\\1", value)


def update_grub_defaults(text, variable, arguments, remove=()):
    """Rewrite the last assignment of `variable` in a GRUB defaults file (append one when there is none).

    Returns (new_text, old_value, new_value, added, replaced, removed)."""
    lines = text.splitlines(True)
    pattern = re.compile(ASSIGNMENT % re.escape(variable))
    index = None
    for number, line in enumerate(lines):
        if pattern.match(line.rstrip("\n")):
            index = number
    if index is None:
        old_value, quote, prefix = "", '"', ""
    else:
        match = pattern.match(lines[index].rstrip("\n"))
        old_value, quote = parse_shell_value(match.group("value"))
        prefix = match.group("indent") + (match.group("export") or "")
    merged, added, replaced, removed = merge_args(split_args(old_value), arguments, remove)
    if not (added or replaced or removed):
        return text, old_value, old_value, [], [], []
    new_value = " ".join(merged)
    rendered = "'%s'" % new_value if quote == "'" and "'" not in new_value else quote_for_double(new_value)
    new_line = "%s%s=%s\n" % (prefix, variable, rendered)
    if index is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(new_line)
    else:
        lines[index] = new_line
    return "".join(lines), old_value, new_value, added, replaced, removed


def reboot_reasons(running, arguments, remove=()):
    """Why the running kernel does not have the wanted command line yet."""
    running_args = split_args(running)
    reasons = []
    for key, value in arguments.items():
        wanted = format_arg(key, value)
        if wanted not in running_args:
            reasons.append("%s is not on the running kernel's command line" % wanted)
    for key in remove:
        if any(arg_key(arg) == key for arg in running_args):
            reasons.append("%s is still on the running kernel's command line" % key)
    return reasons


def overriding_files(path, variable):
    directory = path + ".d"
    pattern = re.compile(ASSIGNMENT % re.escape(variable))
    found = []
    for name in sorted(glob.glob(os.path.join(directory, "*.cfg"))):
        try:
            with open(name, encoding="utf-8") as handle:
                if any(pattern.match(line.rstrip("\n")) for line in handle):
                    found.append(name)
        except OSError:
            continue
    return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/default/grub"),
            variable=dict(type="str", default="GRUB_CMDLINE_LINUX_DEFAULT"),
            arguments=dict(type="dict", default={}),
            remove=dict(type="list", elements="str", default=[]),
            create=dict(type="bool", default=True),
            backup=dict(type="bool", default=True),
            proc_cmdline=dict(type="path", default="/proc/cmdline"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path, variable = params["path"], params["variable"]
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", variable):
        module.fail_json(msg="variable %r is not a shell variable name" % variable)
    bad = [key for key in params["arguments"] if not key or re.search(r"[\s=\"]", str(key))]
    if bad:
        module.fail_json(msg="kernel argument keys may not be empty or hold blanks, '=' or quotes: %r" % bad)
    clash = sorted(set(params["arguments"]) & set(params["remove"]))
    if clash:
        module.fail_json(msg="keys %s are both in arguments and remove" % ", ".join(clash))

    exists = True
    try:
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
    except FileNotFoundError:
        before, exists = "", False
    except OSError as err:
        module.fail_json(msg="cannot read %s: %s" % (path, err))
    try:
        with open(params["proc_cmdline"], encoding="utf-8") as handle:
            running = handle.read().strip()
    except OSError:
        running = ""
    reasons = reboot_reasons(running, params["arguments"], params["remove"])
    if not exists and not params["create"]:
        module.exit_json(changed=False, exists=False, cmdline="", running=running, added=[], replaced=[],
                         removed=[], overridden_by=[], reboot_required=bool(reasons), reboot_reasons=reasons)

    after, old_value, new_value, added, replaced, removed = update_grub_defaults(
        before, variable, params["arguments"], params["remove"])
    changed = after != before
    result = dict(
        changed=changed, exists=exists, cmdline=new_value, running=running, added=added, replaced=replaced,
        removed=removed,
        overridden_by=overriding_files(path, variable),
        diff={"before": before, "after": after, "before_header": path, "after_header": path},
    )
    result.update(reboot_required=bool(reasons), reboot_reasons=reasons)
    if result["overridden_by"]:
        module.warn("%s also set %s and are read after %s, so they override it; move your arguments there or "
                    "remove the assignment" % (", ".join(result["overridden_by"]), variable, path))
    if changed and not module.check_mode:
        if params["backup"] and os.path.exists(path):
            result["backup_file"] = module.backup_local(path)
        tmp = "%s.inferfleet.tmp" % path
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(after)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644)
        module.atomic_move(tmp, path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
