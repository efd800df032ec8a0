#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0
# The documentation of the controller action plugins/action/fabric.py (it runs on the controller; no code runs on a
# host), so that `ansible-doc inferfleet.fleet.fabric` and the collection's sanity tests find it.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fabric
short_description: The controller's side of the fabric gate (collective bandwidth tests)
description:
  - Hands the C(inferfleet) Python package's fabric logic the host's plan and what the hosts reported; used by the
    role C(inferfleet.fleet.fabric).
  - Needs the C(inferfleet) Python package on the controller (or in the execution environment).
options:
  mode:
    description:
      - C(prepare) reads the host's saved plan - run or skip, where the host stands in its C(fabric_group), the
        source, the build and every test's container command.
      - C(ready) lets a test across hosts run only when every member got this far.
      - C(judge) checks the test outputs against the thresholds and returns the report rows, the fact
        C(fabric_report), C(status) and one JSON record of the run on the controller.
    type: str
    choices: [prepare, ready, judge]
    required: true
  plan:
    description: The host plan's C(fabric) part (prepare).
    type: dict
  fabric:
    description: The prepare result (ready, judge).
    type: dict
  blocked:
    description: Why this host cannot run the test (held cards, links); empty when it can (ready, judge).
    type: str
  skip:
    description: A blocked host is skipped, not failed (judge).
    type: bool
    default: false
  runs:
    description: The test containers' results (judge).
    type: list
    elements: dict
  waiting:
    description: Which member the rendezvous waited for, if any (judge).
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - inferfleet contributors (@inferfleet)
"""

EXAMPLES = r"""
- name: Prepare this host's fabric test from its plan
  inferfleet.fleet.fabric:
    mode: prepare
    plan: "{{ plan.plan.fabric }}"
  register: fabric_prepared
"""

RETURN = r"""
run:
  description: Whether this host runs a test (prepare).
  returned: mode prepare
  type: bool
go:
  description: Whether the test may start (ready).
  returned: mode ready
  type: bool
status:
  description: pass, fail, measured, skipped or not run (judge).
  returned: mode judge
  type: str
report:
  description: The host's fabric report, also set as the fact C(fabric_report) (judge).
  returned: mode judge
  type: dict
"""
