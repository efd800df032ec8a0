# Copyright: inferfleet contributors
# Apache License 2.0
"""Action plugin of the vllm_bench role: the controller's side of the bench stage; the logic is inferfleet.bench's.

Options:
  mode: prepare (the host's benchmark jobs from its saved plan: one per service and concurrency, with the client's
        command; a service named in vllm_bench_services that no host of the play serves fails every host),
        judge (the client's results against the baseline and the SLOs: the host's part of the run's record,
        <results dir>/bench/<run>/record.json, the raw results beside it, fact vllm_bench_report, `status`),
        report (run once: the run's HTML report, <results dir>/bench/<run>/report.html).
  instances: the host plan's instances (prepare).
  containers: the host's running inferfleet containers, as community.docker.docker_host_info lists them (prepare):
    each job's fingerprint (client command, serving container) is recorded; with vllm_bench_rerun changed, a run
    whose fingerprint matches the last passing measurement of the same benchmark is not measured again, and that
    measurement is shown.
  bench: the prepare result (judge).
  results: the slurped result files, one per job (judge); outputs: the client containers' results (judge).
  context: what the runs were made with (judge): image digests, model revisions; plan: the host's plan (its hash
    is recorded).
"""

import base64
import datetime
import fcntl
import json
import os
from pathlib import Path

from ansible.errors import AnsibleError

try:
    from inferfleet import bench, planner
    from inferfleet.actions import ModeAction
    from inferfleet.actions import plain as _plain
    from inferfleet.text import align
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    # refused when a task runs, not when Ansible loads the plugin (ansible-doc, the collection's sanity tests)
    from ansible.plugins.action import ActionBase as ModeAction

    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None

SETTINGS = ("services", "dataset", "input_len", "output_len", "num_prompts", "concurrency", "prefix", "sharegpt_path",
            "slo", "baseline", "tolerance", "update_baseline", "warmups", "timeout", "extra_args", "work_dir", "rerun")


class ActionModule(ModeAction):

    def run(self, tmp=None, task_vars=None):
        if IMPORT_ERROR is not None:
            raise AnsibleError("the inferfleet Python package is not importable on the controller: %s (install it "
                               "with `pip install inferfleet`, or run in the inferfleet EE)"
                               % IMPORT_ERROR)
        return super().run(tmp, task_vars)
    MODES = {"prepare": "_prepare", "judge": "_judge", "report": "_report"}

    def _settings(self, task_vars):
        return {name: _plain(self._templar.template(task_vars.get("vllm_bench_" + name))) for name in SETTINGS}

    # --- prepare ------------------------------------------------------------------------------------------------
    def _prepare(self, task_vars):
        host = task_vars.get("inventory_hostname")
        settings = self._settings(task_vars)
        instances = _plain(self._task.args.get("instances") or [])
        wanted = settings["services"] or []
        served_anywhere = set()
        for other in task_vars.get("ansible_play_hosts_all", []):
            plan = (task_vars.get("hostvars", {}).get(other, {}).get("__vllm_bench_plan") or {})
            served_anywhere |= {i["service"] for i in plan.get("instances", [])}
        unknown = sorted(set(wanted) - served_anywhere)
        if unknown:
            return {"failed": True, "msg": "vllm_bench_services: %s %s not in the plan of any host of this run "
                                           "(planned: %s) (fix: name planned services, or leave "
                                           "vllm_bench_services empty to benchmark them all)"
                                           % (", ".join(unknown), "is" if len(unknown) == 1 else "are",
                                              ", ".join(sorted(served_anywhere)) or "none")}
        if settings["dataset"] == "sharegpt" and not settings["sharegpt_path"]:
            return {"failed": True, "msg": "host %s: vllm_bench_dataset is sharegpt but vllm_bench_sharegpt_path is "
                                           "not set (fix: give the dataset file on the controller)" % host}
        run_id = self.run_id(task_vars)
        serving = {name.lstrip("/"): c.get("Id") for c in _plain(self._task.args.get("containers") or [])
                   for name in c.get("Names") or []}
        latest = bench.last_measurements(self.results_dir(task_vars), run_id) if settings["rerun"] == "changed" \
            else {}
        jobs, unchanged, datasets, measured_datasets, seen = [], [], {}, set(), set()
        for instance in instances:
            if instance["service"] in seen or (wanted and instance["service"] not in wanted):
                continue
            seen.add(instance["service"])  # a service's first instance (replicas share its settings)
            dataset_file = None
            kind = settings["dataset"] if instance["task"] == "generate" else instance["task"]
            if kind == "shared_prefix":
                prefix = settings["prefix"]
                key = bench_key_text([instance["model"], prefix])
                dataset_file = "%s/shared-prefix-%s.jsonl" % (bench.DATA_DIR, key)
                datasets[dataset_file] = {"model": instance["model"], "image": instance["image"],
                                          "argv": ["python3", "/bench/gen_shared_prefix.py", "--tokenizer",
                                                   instance["model"], "--output", dataset_file,
                                                   "--groups", str(prefix["groups"]),
                                                   "--per-group", str(prefix["prompts_per_group"]),
                                                   "--prefix-len", str(prefix["prefix_len"]),
                                                   "--suffix-len", str(prefix["suffix_len"]),
                                                   "--seed", str(prefix["seed"])]}
            elif kind == "sharegpt":
                dataset_file = "%s/%s" % (bench.DATA_DIR, Path(settings["sharegpt_path"]).name)
            for concurrency in settings["concurrency"]:
                # one directory for every run (a re-run of the stage changes nothing on the host); a file per run
                key = bench.bench_key(host, instance["service"], kind, concurrency)
                mark = bench.fingerprint(instance, settings, concurrency, dataset_file,
                                         serving.get(instance.get("container", {}).get("name")))
                earlier = bench.unchanged_since(latest.get(key), mark)
                if earlier is not None:
                    unchanged.append(dict(earlier, key=key))
                    continue
                measured_datasets.add(dataset_file)
                name = "%s-%s-%s-c%d.json" % (run_id, instance["service"], kind, concurrency)
                argv = bench.client_argv(instance, settings, concurrency, dataset_file, name)
                jobs.append({"service": instance["service"], "instance": instance["name"], "task": instance["task"],
                             "image": instance["image"], "model": instance["model"], "port": instance["port"],
                             "dataset": kind, "concurrency": concurrency, "result": name,
                             "key": key, "fingerprint": mark,
                             "command": ["timeout", "-k", "30", str(settings["timeout"]), *argv]})
        out_dir = "%s/out" % settings["work_dir"]
        return {"jobs": jobs, "unchanged": unchanged,
                # only the datasets of runs that are measured are made
                "datasets": [dict(v, file=k) for k, v in sorted(datasets.items()) if k in measured_datasets],
                "settings": settings, "run": run_id, "out_dir": out_dir,
                "models": sorted({j["model"] for j in jobs}),
                "volumes": ["%s/data:%s" % (settings["work_dir"], bench.DATA_DIR), "%s:%s" % (out_dir, bench.OUT_DIR)]}

    # --- judge --------------------------------------------------------------------------------------------------
    def _judge(self, task_vars):
        host = task_vars.get("inventory_hostname")
        prepared = _plain(self._task.args.get("bench") or {})
        settings = prepared.get("settings") or self._settings(task_vars)
        slurped = _plain(self._task.args.get("results") or [])
        outputs = _plain(self._task.args.get("outputs") or [])
        context = _plain(self._task.args.get("context") or {})
        results_dir = self.results_dir(task_vars)
        run_id = prepared.get("run") or self.run_id(task_vars)
        baseline, baseline_from = bench.baseline_figures(results_dir, settings["baseline"], run_id)
        runs, by_service = {}, {}
        for job, got, out in zip(prepared.get("jobs", []), slurped, outputs, strict=False):
            entry = {"host": host, "service": job["service"], "instance": job["instance"], "dataset": job["dataset"],
                     "concurrency": job["concurrency"], "task": job["task"], "metrics": {}, "reasons": [],
                     "baseline": baseline.get(job["key"]), "fingerprint": job.get("fingerprint")}
            if got.get("content"):
                raw = json.loads(base64.b64decode(got["content"]))
                entry["metrics"] = bench.summarize(raw)
                name = "%s-%s-%s-c%d.json" % (host, job["service"], job["dataset"], job["concurrency"])
                self._keep_raw(results_dir, run_id, name, raw)
                if entry["metrics"].get("completed", 0) == 0:
                    entry["reasons"].append("no request completed")
                elif entry["metrics"].get("failed"):
                    entry["reasons"].append("%d request(s) failed" % entry["metrics"]["failed"])
                if not settings["update_baseline"]:
                    entry["reasons"] += bench.gate(entry["metrics"], entry["baseline"], settings["tolerance"])
            else:
                entry["reasons"].append(_client_failure(out, job))
            runs[job["key"]] = entry
            by_service.setdefault(job["service"], []).append(entry)
        for entries in by_service.values():
            point = bench.knee([e for e in entries if not e["reasons"]], settings["slo"] or {})
            for entry in entries:
                entry.update(knee=point, slo=settings["slo"] or {})
        unchanged = prepared.get("unchanged") or []
        status = ("fail" if any(e["reasons"] for e in runs.values()) else "pass" if runs
                  else "unchanged" if unchanged else "skipped")
        host_context = dict(context, host=host, plan_hash=planner.digest(_plain(self._task.args.get("plan") or {})),
                            tuning=task_vars.get("host_tuning_report"),
                            fabric=(task_vars.get("fabric_report") or {}).get("rows"),
                            time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        record = self._record(results_dir, run_id, host, runs, host_context, baseline_from, settings,
                              simulated=bool(task_vars.get("inferfleet_simulated")))
        report = {"host": host, "status": status, "runs": runs, "record": str(record),
                  "unchanged": {e["key"]: e["run"] for e in unchanged}}
        header = ["service", "dataset", "conc", "req/s", "out tok/s", "p99 TTFT ms", "p99 TPOT ms", "verdict"]
        lines = align([header] + [
            [e["service"], e["dataset"], str(e["concurrency"]), _num(e["metrics"].get("request_throughput")),
             _num(e["metrics"].get("output_throughput")), _num(e["metrics"].get("p99_ttft_ms")),
             _num(e["metrics"].get("p99_tpot_ms")), verdict]
            for e, verdict in [(e, "; ".join(e["reasons"]) or "ok") for e in runs.values()]
            + [(e, "unchanged since run %s" % e["run"]) for e in unchanged]]) if runs or unchanged \
            else ["bench: no service to benchmark on this host"]
        if unchanged and not runs:
            lines.append("nothing measured: every service and setting is as when last measured "
                         "(vllm_bench_rerun: always measures again)")
        message = ""
        if status == "fail":
            message = "host %s: bench gate failed: %s (fix: find what slowed the service, or accept the new " \
                      "figures with `inferfleet bench --update-baseline`)" % (
                          host, "; ".join("%s c=%d: %s" % (e["service"], e["concurrency"], r)
                                          for e in runs.values() for r in e["reasons"]))
        return {"ansible_facts": {"vllm_bench_report": report}, "status": status, "lines": lines, "message": message,
                "record": str(record)}

    def _keep_raw(self, results_dir, run_id, name, raw):
        path = results_dir / "bench" / run_id / "raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(raw, indent=1))

    def _record(self, results_dir, run_id, host, runs, context, baseline_from, settings, simulated):
        path = results_dir / "bench" / run_id / "record.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(path.parent.parent / ".lock"), "w") as lock:  # the hosts' judge tasks run in parallel
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = json.loads(path.read_text()) if path.is_file() else {
                "run": run_id, "runs": {}, "context": {}, "baseline": baseline_from,
                "settings": {k: v for k, v in settings.items() if k != "extra_args"}, "simulated": simulated,
                "accepted": bool(settings["update_baseline"])}
            document["runs"].update(runs)
            document["context"][host] = context
            failed = any(e["reasons"] for e in document["runs"].values())
            document["status"] = "fail" if failed else "pass"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(document, indent=2, sort_keys=True))
            os.replace(str(tmp), str(path))
        if settings["update_baseline"] and settings["baseline"] not in ("previous", "none"):
            self._update_baseline_file(Path(settings["baseline"]), runs)
        return path

    def _update_baseline_file(self, path, runs):
        with open(str(path) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
            document["runs"].update({k: {"metrics": v["metrics"]} for k, v in runs.items() if v["metrics"]})
            path.write_text(json.dumps(document, indent=2, sort_keys=True))
        os.unlink(str(path) + ".lock")

    # --- report -------------------------------------------------------------------------------------------------
    def _report(self, task_vars):
        run_id = self.run_id(task_vars)
        path = self.results_dir(task_vars) / "bench" / run_id / "record.json"
        if not path.is_file():
            return {"report": None}
        report = path.with_name("report.html")
        report.write_text(bench.render_report(json.loads(path.read_text())))
        return {"report": str(report)}


def bench_key_text(value):
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _num(value):
    return "-" if value is None else "%.2f" % value


def _client_failure(output, job):
    """Why the client produced no result: its exit status and its last words."""
    if not output or output.get("skipped"):
        return "not run"
    status = output.get("status")
    text = (output.get("msg") if status else ((output.get("container") or {}).get("Output"))) or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip() and not line.startswith("W1")][-3:]
    if "invalid choice" in str(text) and job["task"] != "generate":
        return "this image's vLLM bench client has no %s backend: not measured" % job["task"]
    if "No module named" in str(text):
        return "the image's vLLM lacks the benchmark's libraries (%s; `pip install vllm[bench]` brings them): " \
               "use an image that has them" % (lines[-1] if lines else "")
    how = "timed out" if status == 124 else "exited with code %s" % status
    return "the benchmark client %s: %s" % (how, " | ".join(lines) or "no output")
