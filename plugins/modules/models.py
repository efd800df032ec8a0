#!/usr/bin/python
# Copyright: inferfleet contributors
# Apache License 2.0
# The documentation of the controller action plugins/action/models.py (it runs on the controller; no code runs on a
# host), so that `ansible-doc inferfleet.fleet.models` and the collection's sanity tests find it.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: models
short_description: Fetch every model the fleet's plan uses, once, into the controller's fleet cache
description:
  - The controller fetches each model with the hubs' own clients (C(huggingface_hub), C(modelscope)), git-lfs or
    from a path, verifies every file, and returns each one's manifest for the hosts to copy and verify with
    M(inferfleet.fleet.model_files). Run once for the play.
  - The hub tokens (C(inferfleet_hf_token), C(inferfleet_modelscope_token)) and endpoints are read from the task's
    variables, never passed as arguments, and never returned.
  - Needs the C(inferfleet) Python package on the controller (or in the execution environment).
options:
  wanted:
    description:
      - "Every host's model directories with the C(inferfleet_models) value naming each one's source, as
        C([{path: ..., value: ...}])."
    type: list
    elements: dict
    required: true
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
- name: Fetch the fleet's models into the controller's cache
  inferfleet.fleet.models:
    wanted: "{{ ansible_play_hosts | map('extract', hostvars, '__models_wanted') | flatten }}"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
manifests:
  description: Each fetched model's manifest (files, sizes, hashes, commit), by model.
  returned: always
  type: dict
rows:
  description: One row a model for the stage's table - source, revision, size, where it came from, seconds.
  returned: always
  type: list
  elements: dict
cache:
  description: The controller's fleet cache directory.
  returned: always
  type: str
"""
