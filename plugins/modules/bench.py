#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0
# The documentation of the controller action plugins/action/bench.py (it runs on the controller; no code runs on a
# host), so that `ansible-doc inferfleet.fleet.bench` and the collection's sanity tests find it.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: bench
short_description: The controller's side of the bench stage (vllm bench serve, baseline, report)
description:
  - Prepares the host's benchmark jobs from its saved plan, judges the client's results against the baseline and
    the SLOs, and writes the run's HTML report; used by the role C(inferfleet.fleet.vllm_bench).
  - Needs the C(inferfleet) Python package on the controller (or in the execution environment).
options:
  mode:
    description:
      - C(prepare) returns one job per service and concurrency, with the client's command.
      - C(judge) compares the results with the baseline and the SLOs and records them under the results directory.
      - C(report) (run once) writes the run's HTML report.
    type: str
    choices: [prepare, judge, report]
    required: true
  instances:
    description: The host plan's instances (prepare).
    type: list
    elements: dict
  containers:
    description:
      - The host's running inferfleet containers as M(community.docker.docker_host_info) lists them (prepare). With
        C(vllm_bench_rerun=changed), a benchmark whose client command and serving container are those of its last
        passing measurement is returned in RV(unchanged), not as a job.
    type: list
    elements: dict
    default: []
  bench:
    description: The prepare result (judge).
    type: dict
  results:
    description: The slurped result files, one per job (judge).
    type: list
    elements: dict
  outputs:
    description: The client containers' results (judge).
    type: list
    elements: dict
  context:
    description: What the runs were made with - image digests, model revisions (judge).
    type: dict
  plan:
    description: The host's plan; its hash is recorded (judge).
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
- name: Prepare this host's benchmark jobs
  inferfleet.fleet.bench:
    mode: prepare
    instances: "{{ plan.instances }}"
  register: bench_prepared
"""

RETURN = r"""
jobs:
  description: The benchmark jobs (prepare).
  returned: mode prepare
  type: list
  elements: dict
unchanged:
  description: The earlier measurements that still stand, each with the run it comes from (prepare).
  returned: mode prepare
  type: list
  elements: dict
status:
  description: The host's verdict (judge) - pass, fail, unchanged (nothing measured, every benchmark as when last
    measured) or skipped (no service to benchmark).
  returned: mode judge
  type: str
report:
  description: The report's path (report).
  returned: mode report
  type: str
"""
