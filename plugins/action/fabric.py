# Copyright: inferfleet contributors
# Apache License 2.0
"""Action plugin of the fabric role: the controller's side of the fabric gate. The logic is
inferfleet.fabric's (pure, unit-tested); this plugin hands it the plan and what the hosts reported.

Options:
  mode: prepare (from the host's saved plan: run or skip, where the host stands in its fabric_group, the source,
        the build and every test's container command),
        ready (a test across hosts runs only when every member got this far: otherwise no member starts it and
        waits at the rendezvous for nothing),
        judge (the test outputs against the thresholds: the report rows and lines, fact fabric_report, `status`
        (pass, fail, measured, skipped, not run) and one JSON record of the run on the controller).
  plan: the host plan's `fabric` part (prepare).
  fabric: the prepare result (ready, judge).
  blocked: why this host cannot run the test (held cards, links), empty when it can (ready, judge).
  skip: a blocked host is skipped, not failed (held cards with fabric_when_cards_held: skip) (judge).
  waiting: why the host's group cannot run the test (another member is blocked): skipped (judge).
  runs: the registered docker_container results, one per test (judge).
"""

import datetime
import fcntl
import json
import os
from pathlib import Path

from ansible.errors import AnsibleError

try:
    from inferfleet import fabric
    from inferfleet.actions import ModeAction
    from inferfleet.actions import plain as _plain
    from inferfleet.paths import cache_dir, tree_digest
    from inferfleet.text import align
except ImportError as exc:  # pragma: no cover - depends on the controller's environment
    # refused when a task runs, not when Ansible loads the plugin (ansible-doc, the collection's sanity tests)
    from ansible.plugins.action import ActionBase as ModeAction

    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None


class ActionModule(ModeAction):

    def run(self, tmp=None, task_vars=None):
        if IMPORT_ERROR is not None:
            raise AnsibleError("the inferfleet Python package is not importable on the controller: %s (install it "
                               "with `pip install inferfleet`, or run in the inferfleet EE)"
                               % IMPORT_ERROR)
        return super().run(tmp, task_vars)
    MODES = {"prepare": "_prepare", "ready": "_ready", "judge": "_judge"}

    # --- prepare ------------------------------------------------------------------------------------------------
    def _members(self, task_vars):
        """Every host of the play in inventory order, with its fabric plan's group and card count."""
        hostvars = task_vars.get("hostvars", {})
        running = set(task_vars.get("ansible_play_hosts", []))
        members = []
        for name in task_vars.get("ansible_play_hosts_all", []):
            own = hostvars.get(name, {})
            plan = (((own.get("__fabric_plan") or {}).get("plan") or {}).get("fabric")) or {}
            members.append({"name": name, "address": own.get("ansible_host") or name, "group": plan.get("group"),
                            "ranks_per_node": plan.get("ranks_per_node"), "running": name in running,
                            "run": plan.get("run", False)})
        return members

    def _prepare(self, task_vars):
        plan = _plain(self._task.args.get("plan") or {})
        host = task_vars.get("inventory_hostname")
        if not plan.get("run"):
            return {"run": False, "reason": plan.get("reason") or "no fabric test planned", "plan": plan}
        where = fabric.resolve_group(host, plan, self._members(task_vars))
        if where.get("error"):
            return {"failed": True, "msg": "host %s: %s" % (host, where["error"])}
        if where["nodes"] > 1:  # the defaults are per rank count: a group runs more ranks than one host
            for test in plan["tests"]:
                test["thresholds"] = fabric.thresholds_for(plan["card_model"], test, where["ranks"],
                                                           plan["user_thresholds"])
        for test in plan["tests"]:
            test["argv"] = fabric.test_argv(plan, test, where)
            test["command"] = fabric.container_command(plan, test["argv"])
        source = dict(plan["source"])
        base = Path(task_vars.get("inventory_dir") or ".")
        if source.get("path"):
            path = (base / source["path"]).resolve()
            if not path.is_dir():
                return {"failed": True, "msg": "host %s: fabric_source.path: %s is not a directory on the "
                                               "controller (fix: point it at the test's source)" % (host, path)}
            source.update(kind="path", path=str(path), version=tree_digest(path).hexdigest()[:16])
        elif source.get("git"):
            source.update(kind="git", version="")  # the commit, once the controller has cloned it
        elif source.get("url"):
            source.update(kind="url", version=source["url"])
        else:
            source.update(kind="image_path", version=source["image_path"])
        cache = cache_dir() / "fabric"
        identity = {k: source.get(k) for k in ("git", "ref", "url", "path", "image_path")}
        source["key"] = fabric.digest_text(json.dumps(identity, sort_keys=True))
        source["controller_dir"] = str(Path(source["path"]) if source["kind"] == "path"
                                       else cache / "src" / source["key"])
        source["host_dir"] = "%s/src-%s" % (plan["work_dir"], source["key"])
        # the build reads the source where the container sees it: the host copy, or a directory of the image
        inside = source["image_path"] if source["kind"] == "image_path" else "/fabric/src"
        env = dict(plan["container"]["env"])
        if plan["tool"] == "hccl_demo":  # the rendezvous: every node names the group's first one
            env["HCCL_COMM_ID"] = where["comm_id"]
        return {"run": True, "plan": plan, "where": where, "tests": plan["tests"], "source": source,
                "build_argv": fabric.build_command(plan, inside), "container": plan["container"], "env": env}

    # --- ready --------------------------------------------------------------------------------------------------
    def _ready(self, task_vars):
        prepared = self._task.args.get("fabric") or {}
        blocked = self._task.args.get("blocked") or ""
        if blocked or prepared.get("where", {}).get("nodes", 1) == 1:
            return {"go": not blocked, "why": blocked}
        hostvars = task_vars.get("hostvars", {})
        running = set(task_vars.get("ansible_play_hosts", []))
        waiting = []
        for member in prepared["where"]["members"]:
            their = (hostvars.get(member, {}).get("__fabric_blocked") or "") if member in running \
                else "stopped earlier in this run"
            if their:
                waiting.append("%s (%s)" % (member, their))
        if waiting:
            return {"go": False, "why": "not run: fabric_group %r member %s cannot run the test"
                                        % (prepared["plan"]["group"], ", ".join(waiting))}
        return {"go": True, "why": ""}

    # --- judge --------------------------------------------------------------------------------------------------
    def _judge(self, task_vars):
        host = task_vars.get("inventory_hostname")
        prepared = _plain(self._task.args.get("fabric") or {})
        blocked = self._task.args.get("blocked") or ""
        runs = _plain(self._task.args.get("runs") or [])
        plan, where = prepared.get("plan") or {}, prepared.get("where") or {"ranks": 0, "nodes": 1}
        waiting = self._task.args.get("waiting") or ""
        rows = []
        if not prepared.get("run"):
            status = "skipped"
            reasons = [prepared.get("reason") or "no fabric test planned"]
        elif blocked:
            status = "skipped" if _bool(self._task.args.get("skip")) else "fail"
            reasons = [blocked]
        elif waiting:
            status, reasons = "skipped", [waiting]
        elif task_vars.get("ansible_check_mode"):
            status, reasons = "not run", ["check mode runs no test"]
        else:
            root = self._root_figures(task_vars, prepared)
            for test, run in zip(prepared["tests"], runs, strict=True):
                exit_code, output = _exit_and_output(run)
                rows.append(fabric.judge(plan, test, where, exit_code, output, root.get(test["test"])))
            statuses = {r["status"] for r in rows}
            status = "fail" if "fail" in statuses else "pass" if "pass" in statuses else "measured"
            reasons = [reason for r in rows for reason in r["reasons"]]
        report = {"host": host, "status": status, "reasons": reasons, "rows": rows, "tool": plan.get("tool"),
                  "card_model": plan.get("card_model"), "group": plan.get("group"), "where": where,
                  "simulated": bool(task_vars.get("inferfleet_simulated")),
                  "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        # check mode measures nothing: no record of it
        record = None if task_vars.get("ansible_check_mode") else self._record(task_vars, report)
        lines = (align(fabric.table_rows(rows)) if rows else []) + ["fabric: %s%s" % (
            status, " (%s)" % "; ".join(reasons) if reasons else "")]
        message = ""
        if status == "fail":
            message = "host %s: fabric gate failed (%s): %s. Fix: %s" % (
                host, plan.get("tool") or "fabric", "; ".join(reasons), _fix(blocked, rows))
        # the role fails the host on `status` (a failed action result would be overridden by failed_when)
        return {"ansible_facts": {"fabric_report": report}, "report": report, "record": record, "lines": lines,
                "status": status, "message": message}

    def _root_figures(self, task_vars, prepared):
        """hccl_demo prints its result on the group's first node only: the others report that node's figures."""
        where = prepared["where"]
        if where.get("nodes", 1) == 1 or where.get("node_id") == 0:
            return {}
        root = where["members"][0]
        runs = (task_vars.get("hostvars", {}).get(root, {}).get("__fabric_runs") or {}).get("results") or []
        figures = {}
        for test, run in zip(prepared["tests"], runs, strict=False):  # the root may have failed before its run
            output = _exit_and_output(_plain(run))[1]
            figures[test["test"]] = {"measured": fabric.measured(prepared["plan"]["tool"],
                                                                 fabric.parse_output(prepared["plan"]["tool"],
                                                                                     output))}
        return figures

    def _record(self, task_vars, report):
        """Merge the host's report into the run's JSON record: <results dir>/fabric/<run>.json."""
        run_id = self.run_id(task_vars)
        path = self.results_dir(task_vars) / "fabric" / ("%s.json" % run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(path.parent / ".lock"), "w") as lock:  # the hosts' judge tasks run in parallel workers
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = json.loads(path.read_text()) if path.is_file() else {"run": run_id, "hosts": {}}
            document["hosts"][report["host"]] = report
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(document, indent=2, sort_keys=True))
            os.replace(str(tmp), str(path))
        return str(path)


def _fix(blocked, rows):
    """What to do about a failed gate, by what failed."""
    if blocked and "held" in blocked:
        return "stop what holds the cards (inferfleet down, or the process named) and run the stage again"
    if blocked and "not installed" in blocked:
        return "install the driver's tools on the host, or set fabric_link_check: false to measure without them"
    if blocked:
        return "bring the links up (cabling, optics, the NIC's state) and run the stage again"
    if any("threshold" in r for row in rows for r in row["reasons"]) and not any(
            "wrong" in r or "bad" in r or "exited" in r for row in rows for r in row["reasons"]):
        return ("find the slow card or link (hl-smi -n link, hccn_tool -link_stat -g, nvidia-smi topo -m), or "
                "set fabric_thresholds if this fabric is known to be slower")
    return ("run the vendor's diagnostics on the host's cards (hl_qual, ascend-dmi, dcgmi diag); the test's last "
            "lines are in the run's log")


def _bool(value):
    return value is True or str(value).lower() in ("true", "yes", "1")


def _exit_and_output(run):
    """A docker_container result (detach: false): its exit status and what the container printed. The module
    fails on a non-zero status and puts the output in msg."""
    if not run or run.get("skipped"):
        return None, ""
    status = run.get("status")
    output = ((run.get("container") or {}).get("Output")) if status == 0 else run.get("msg")
    return status, output or ""
