# Copyright: inferfleet contributors
# Apache License 2.0
"""Action plugin of the models role: the controller fetches every model the fleet's plan uses, once, into its fleet
cache (inferfleet.models.fetch, with the hubs' own clients), and returns each one's manifest for the hosts to copy
and verify. Run once for the play.

Options:
  wanted: [{path, value}] of every host of the play: the model directories their plans use, with the
    inferfleet_models value naming each one's source.
The hub tokens (inferfleet_hf_token, inferfleet_modelscope_token) and endpoints are read from the task's variables
here, never passed as task arguments, and never returned.
"""

import json
import time
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

IMPORT_ERROR = None
try:
    from inferfleet import models
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    models = None
    IMPORT_ERROR = exc


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if models is None:
            raise AnsibleActionFail("the inferfleet Python package is not importable on the controller: %s (install "
                                    "it with `pip install inferfleet`, or run in the inferfleet EE)" % IMPORT_ERROR)
        task_vars = task_vars or {}

        def setting(name):
            return self._templar.template(task_vars.get(name)) if task_vars.get(name) else None

        cache = Path(setting("inferfleet_model_cache_dir") or models.default_cache())
        offline = str(setting("inferfleet_models_offline")).lower() in ("true", "yes", "1")
        wanted = json.loads(json.dumps(self._task.args.get("wanted") or [], default=str))
        fetched, rows, problems = {}, [], []
        for item in wanted:
            try:
                ref = models.catalogue_entry(item["value"])
            except (ValueError, KeyError, TypeError) as err:
                problems.append("inferfleet_models[%s]: %s" % (item["path"], err))
                continue
            if ref.key() in fetched:
                continue
            token, endpoint = {"hf": (setting("inferfleet_hf_token"), setting("inferfleet_hf_endpoint")),
                               "modelscope": (setting("inferfleet_modelscope_token"),
                                              setting("inferfleet_modelscope_endpoint"))}.get(ref.scheme, (None, None))
            started = time.monotonic()
            try:
                if task_vars.get("ansible_check_mode"):  # what would be fetched: the hub's description only
                    manifest = models.planned(ref, cache, token=token, endpoint=endpoint, offline=offline)
                else:
                    manifest = models.fetch(ref, cache, token=token, endpoint=endpoint, offline=offline)
            except models.ModelError as err:
                problems.append("%s (model %s): %s (fix: %s)" % (ref.source, item["path"], err, err.fix))
                continue
            fetched[ref.key()] = manifest
            rows.append({"source": ref.source, "revision": manifest.get("commit") or "-", "size": manifest["size"],
                         "where": manifest["where"], "seconds": round(time.monotonic() - started, 1)})
        result.update(changed=False, manifests=fetched, rows=rows, cache=str(cache))
        if problems:
            result.update(failed=True, msg="the fleet cache could not get every model, so no host was changed:\n  - "
                                           + "\n  - ".join(problems))
        return result
