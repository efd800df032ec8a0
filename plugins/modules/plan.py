#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0
# The documentation of the controller action plugins/action/plan.py (it runs on the controller; no code runs on a
# host), so that `ansible-doc inferfleet.fleet.plan` and the collection's sanity tests find it.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: plan
short_description: Validate a host's settings and plan its services on the controller, once per run
description:
  - Runs on the controller the same validation and planner as C(inferfleet plan) (the C(inferfleet) Python package),
    and saves the plan so that every later stage of the run applies that one plan.
  - The plan is a registered result, not a fact; it carries the services' environment, which may hold tokens, and
    facts go to the fact cache.
  - Needs the C(inferfleet) Python package on the controller (or in the execution environment).
options:
  mode:
    description:
      - C(check) validates and plans offline and saves nothing (the validation play).
      - C(save) plans on the discovered cards, or takes the saved plan C(inferfleet_saved_plan) after checking it
        is still current, and saves it in the run directory (preflight).
      - C(load) returns the plan this run saved; it is planned and saved now when no earlier stage of the run did.
      - C(collect) (run once) writes the hosts' saved plans as one file, C(<run dir>/plan.json), the shape
        C(inferfleet plan --save) writes and C(inferfleet up --plan) takes.
    type: str
    choices: [check, save, load, collect]
    default: check
  discovered:
    description:
      - The M(inferfleet.fleet.accel_facts) result; held and missing cards are refused with it.
      - In modes C(save) and C(load) by default the host's facts C(inferfleet_accel).
    type: dict
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
- name: Plan this host's services and save the plan for the later stages
  inferfleet.fleet.plan:
    mode: save
  register: plan

- name: Load the plan preflight saved
  inferfleet.fleet.plan:
    mode: load
"""

RETURN = r"""
plan:
  description: The host's plan (platform, accelerator, instances, front doors, fabric).
  returned: success
  type: dict
instances:
  description: The containers the plan runs on this host.
  returned: success
  type: list
  elements: dict
platform:
  description: The host's platform (gaudi, ascend, nvidia, cpu).
  returned: success
  type: str
accelerator:
  description: The card model the plan is made for.
  returned: success
  type: str
plan_file:
  description: Where the plan was saved.
  returned: modes save, load and collect
  type: str
"""
