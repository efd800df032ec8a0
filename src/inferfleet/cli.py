"""The `inferfleet` command line."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

from . import runner, runs
from .runner import ANSI, TaskResult
from .sandbox.fleet import FAULT_KINDS
from .text import align

STATUS_MARK = {"ok": "ok", "changed": "changed", "failed": "FAILED", "unreachable": "UNREACHABLE",
               "skipped": "skipped"}


def _color(text: str, status: str) -> str:
    if not sys.stdout.isatty():
        return text
    code = {"ok": "32", "changed": "33", "failed": "31", "unreachable": "31", "skipped": "36"}.get(status)
    return f"\033[{code}m{text}\033[0m" if code else text


def print_result(result: TaskResult) -> None:
    if result.status == "skipped":
        return
    line = f"  {_color(STATUS_MARK[result.status].ljust(11), result.status)} {result.host:<16} {result.task}"
    print(line, flush=True)
    shown = result.status in ("failed", "unreachable") or result.task.split(" : ")[-1].startswith(("Show", "Warn"))
    if shown and result.msg:
        for msg_line in result.msg.splitlines():
            print(f"{'':14}{msg_line}", flush=True)


def print_recap(result: runner.RunResult) -> None:
    print("\nRECAP" + " " * 13 + "ok  changed  failed  unreachable  skipped")
    for name in sorted(result.hosts):
        h = result.hosts[name]
        status = "ok" if h.healthy else "failed"
        print(_color(f"  {name:<16}{h.ok:>4}{h.changed:>9}{h.failed:>8}{h.unreachable:>13}{h.skipped:>9}", status))
    verdict = "succeeded" if result.ok else "FAILED"
    print(f"\nrun {verdict} in {result.elapsed:.1f}s{f', recorded in {result.run_dir}' if result.run_dir else ''}")


def print_output(text: str) -> None:
    """Ansible's own output beyond task results (what -v, -vv, -vvv add: config file, connections, commands)."""
    for line in text.splitlines():
        print(f"{'':14}{line}", flush=True)


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _extravars(pairs: list[str]) -> dict:
    """-e as ansible-playbook takes it: KEY=VALUE (a string), a YAML/JSON mapping, or @FILE."""
    import yaml

    extra = {}
    for pair in pairs:
        if pair.startswith("@"):
            loaded = yaml.safe_load(Path(pair[1:]).read_text())
        elif pair.lstrip().startswith("{"):
            try:
                loaded = yaml.safe_load(pair)
            except yaml.YAMLError as err:
                raise SystemExit(f"-e {pair!r} is not valid YAML/JSON: {err}") from err
        elif "=" in pair:
            key, value = pair.split("=", 1)
            loaded = {key: value}
        else:
            raise SystemExit(f"-e expects KEY=VALUE, a {{...}} mapping or @FILE, got {pair!r}")
        if not isinstance(loaded, dict):
            raise SystemExit(f"-e {pair!r} is not a mapping")
        extra.update(loaded)
    return extra


class _Tee:
    """A stream that also writes what it is given, colours stripped, to the run's log."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(ANSI.sub("", text))
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name):  # isatty, encoding, fileno: the terminal's
        return getattr(self._stream, name)


def _ask(prompt: str) -> str:
    try:
        return getpass.getpass(prompt)
    except EOFError as err:
        raise ValueError(f"no answer to {prompt.strip()!r}: run from a terminal, or use --vault-password-file / "
                         "--vault-id LABEL@FILE instead of a prompt") from err


def _secrets(args) -> runner.Secrets | None:
    """Ask here, as ansible-playbook would: runner's pty cannot reach the terminal, and the answers then travel
    in memory only (runner.Secrets)."""
    labels = runner.prompted_vault_labels(args.vault_id)
    if not (args.ask_vault_pass or args.ask_become_pass or labels):
        return None
    return runner.Secrets(become=_ask("BECOME password: ") if args.ask_become_pass else None,
                          vault=_ask("Vault password: ") if args.ask_vault_pass else None,
                          vault_ids={label: _ask(f"Vault password ({label}): ") for label in labels})


class Refused(ValueError):
    """Bad input found before anything ran: the problems, printed one `ERROR   ...` line each (as `plan` does)."""

    def __init__(self, problems):
        super().__init__("\n".join(f"ERROR   {p}" for p in problems))


def _refusals(args, plan_services: bool) -> list:
    """The inventory's problems, by the same code as `inferfleet plan` (and the validation play): up checks the
    settings and the services; status and down only that the inventory and --limit can be read, so that a
    broken service spec never keeps a user from stopping what runs."""
    from .inventory import load_hosts, plan_inventory

    if plan_services:
        return plan_inventory(args.inventory, limit=args.limit).errors
    return load_hosts(args.inventory, limit=args.limit)[1]


@contextmanager
def _run(args, command: str, stages: list[str] | None = None) -> Iterator[dict]:
    """What up, status and down share: refuse bad input before anything runs, ask for the passwords, make the run
    directory and copy everything printed into its log.txt. Yields run_playbook's options for the run."""
    runner.check_request(args.inventory, stages)
    problems = _refusals(args, plan_services=command == "up")
    if problems:
        raise Refused(problems)
    # the files must exist before anyone is asked a password
    runner.vault_options(args.vault_id, args.vault_password_file)
    keep = runs.keep_count()
    secrets = _secrets(args)
    run_dir = runs.create(command, record={"argv": runs.redact_argv(args.argv)}, keep=keep)
    verbosity = args.verbosity + args.global_verbosity
    try:
        with (run_dir / runs.LOG).open("a", encoding="utf-8") as log, \
                redirect_stdout(_Tee(sys.stdout, log)), redirect_stderr(_Tee(sys.stderr, log)):
            yield {"run_dir": run_dir, "verbosity": verbosity, "vault_ids": args.vault_id,
                   "vault_password_files": args.vault_password_file, "secrets": secrets,
                   "record": getattr(args, "record", None),
                   "on_output": print_output if verbosity and not getattr(args, "json", False) else None}
    except BaseException as err:
        _finish(run_dir, f"error: {type(err).__name__}: {err}")
        raise
    _finish(run_dir, "not run")


def _finish(run_dir: Path, status: str) -> None:
    """A run refused or broken before the playbook ended still gets an end, else it would read as in progress
    (and never be pruned) for as long as this process lives."""
    if not runs.read_record(run_dir).get("finished"):
        runs.update_record(run_dir, {"finished": runs.timestamp(datetime.now(timezone.utc)), "ok": False,
                                     "status": status})


def cmd_up(args) -> int:
    stages = _split(args.stages)
    try:
        extravars = _extravars(args.extra_vars)
        if args.plan:
            extravars["inferfleet_saved_plan"] = str(_saved_plan(args.plan))
        with _run(args, "up", stages) as options:
            if not args.json:
                print(f"inferfleet: running {'stages ' + ','.join(stages) if stages else 'all stages'} on "
                      f"{args.inventory}{' (check mode)' if args.check else ''}", flush=True)
            result = runner.up(args.inventory, stages=stages, limit=args.limit, check=args.check, diff=args.diff,
                               extravars=extravars, on_result=None if args.json else print_result, **options)
            if args.json:
                print(json.dumps(result.to_dict(), indent=2))
            else:
                for error in result.errors:
                    print(error, file=sys.stderr)
                print_recap(result)
    except (FileNotFoundError, ValueError) as err:
        return _report(err)
    return 0 if result.ok else 1


def _report(err: Exception) -> int:
    """Input refused before anything ran: exit 2."""
    print(err if isinstance(err, Refused) else f"inferfleet: {err}", file=sys.stderr)
    return 2


def _saved_plan(path: str) -> Path:
    """A plan file `inferfleet plan --save` wrote; whether it is still current is judged per host in preflight."""
    from .planner import PLAN_FORMAT

    plan = Path(path).resolve()
    try:
        document = json.loads(plan.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--plan {path}: cannot read a saved plan ({err}); save one with inferfleet plan -i "
                         f"INVENTORY --save FILE") from err
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT or "hosts" not in document:
        raise ValueError(f"--plan {path}: not a saved plan of format {PLAN_FORMAT}; save one with inferfleet plan "
                         f"-i INVENTORY --save FILE")
    return plan


def _sandbox(args):
    from .sandbox.fleet import Sandbox

    return Sandbox(name=args.name, registry_port=args.registry_port,
                   state_root=Path(args.state_dir) if args.state_dir else None)


def _size(nbytes) -> str:
    if nbytes is None:
        return "?"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def fabric_line(gate: dict) -> str:
    """The host's fabric gate in a line: the tool, each test and its thresholds (GB/s), or why it is skipped."""
    from .fabric import human_size

    if not gate.get("run"):
        return f"skipped ({gate.get('reason')})"
    tests = []
    for test in gate["tests"]:
        rules = ", ".join(f"{metric} > {rule['min']:g}" for metric, rule in test["thresholds"].items())
        tests.append(f"{test['test']} {human_size(test['size'])} ({rules or 'no threshold: measured only'})")
    group = f", group {gate['group']}" if gate.get("group") else ""
    return f"{gate['tool']} on {gate['ranks_per_node']} cards{group}: " + "; ".join(tests)


def render_plan(plan) -> list[str]:
    """The plan as text: a table per host, then errors and warnings."""
    lines = []
    columns = ("instance", "task", "devices", "port", "tp", "mem", "kv/token", "weights/card", "max conc", "image")
    for name, host in sorted(plan.hosts.items()):
        accel = host.accelerator
        cards = (f"{accel['count']} x {accel['model']} {accel['memory_gib']} GiB" if accel.get("count")
                 else "no cards" if accel else "not planned: its settings are invalid")
        tags = [t for t, on in (("discovered", accel.get("discovered")), ("SIMULATED", accel.get("simulated"))) if on]
        lines.append(f"host {name} ({host.platform}, {cards}{', ' + ', '.join(tags) if tags else ''})")
        if host.fabric:
            lines.append("  fabric: " + fabric_line(host.fabric))
        if not host.instances:
            lines.append("  no services")
        rows = [columns]
        for inst in host.instances:
            kv = inst["kv_cache"]
            weights = kv["weights_bytes"] / inst["tensor_parallel_size"] if kv["weights_bytes"] else None
            rows.append((inst["name"], inst["task"], ",".join(map(str, inst["devices"])) or "-", str(inst["port"]),
                         str(inst["tensor_parallel_size"]),
                         "-" if inst["memory_fraction"] is None else f"{inst['memory_fraction']:.2f}",
                         _size(kv["bytes_per_token"]) if kv["bytes_per_token"] else "-", _size(weights),
                         "-" if kv["max_concurrency"] is None else str(kv["max_concurrency"]), inst["image"]))
        lines += ["  " + line for line in align(rows)] if host.instances else []
        for door in host.front_doors:
            behind = ", ".join(s["name"] for b in door["backends"] for s in b["servers"]) or \
                f"the hosts serving {door['services'][0]} in the run"
            kind = "fleet front door" if door.get("fleet") else "front door"
            lines.append(f"  {kind} {door['url']} ({door['balance']}): {behind}")
    for issue in plan.errors:
        lines.append(f"ERROR   {issue}")
    for issue in plan.warnings:
        lines.append(f"warning {issue}")
    lines.append(f"plan {'valid' if plan.ok else 'INVALID'}: {sum(len(h.instances) for h in plan.hosts.values())} "
                 f"instance(s) on {len(plan.hosts)} host(s), {len(plan.errors)} error(s), "
                 f"{len(plan.warnings)} warning(s)")
    return lines


def cmd_plan(args) -> int:
    from .inventory import plan_inventory
    from .paths import cache_dir

    facts_dir = Path(args.facts_dir) if args.facts_dir else cache_dir() / "facts"
    plan = plan_inventory(args.inventory, limit=args.limit, facts_dir=facts_dir if facts_dir.is_dir() else None)
    document = plan.to_dict()
    if args.json:
        # indented for a person; compact into a pipe, where a wide fleet's plan is tens of MB
        print(json.dumps(document, indent=2 if sys.stdout.isatty() else None))
    else:
        print("\n".join(render_plan(plan)))
    if args.save and plan.ok:
        _write_plan(Path(args.save), {k: document[k] for k in ("format", "hash", "hosts")})
        print(f"plan saved to {args.save} (hash {document['hash'][:12]}); apply it with: inferfleet up -i "
              f"{args.inventory} --plan {args.save}", file=sys.stderr)
    elif args.save:
        print(f"inferfleet: an invalid plan is not saved ({args.save} left as it was)", file=sys.stderr)
    return 0 if plan.ok else 2


def cmd_models_pull(args) -> int:
    """The models the inventory's plan uses, fetched once each into the fleet cache (or a bundle directory) with
    the hubs' own clients, as the models stage does. Tokens: inferfleet_hf_token / inferfleet_modelscope_token
    (plain or from an unlocked vault), else HF_TOKEN / MODELSCOPE_API_TOKEN from the environment."""
    import os

    from . import models
    from .inventory import load_hosts
    from .planner import plan_hosts

    hosts, problems = load_hosts(args.inventory, None, args.limit)
    plan = plan_hosts(hosts) if not problems else None
    problems = problems or plan.errors
    if problems:
        for problem in problems:
            print(f"ERROR   {problem}", file=sys.stderr)
        return 2
    wanted = {}
    for host in hosts:
        catalogue = host.vars.get("inferfleet_models") or {}
        for instance in plan.hosts[host.name].instances:
            if instance["model"] in catalogue:
                ref = models.catalogue_entry(catalogue[instance["model"]])
                wanted.setdefault(ref.key(), (ref, host.vars, instance["model"]))
    rows, failed = [], []
    for ref, hv, path in wanted.values():
        cache = Path(args.bundle or hv.get("inferfleet_model_cache_dir") or models.default_cache())
        names = {"hf": ("inferfleet_hf_token", "inferfleet_hf_endpoint", "HF_TOKEN"),
                 "modelscope": ("inferfleet_modelscope_token", "inferfleet_modelscope_endpoint",
                                "MODELSCOPE_API_TOKEN")}.get(ref.scheme)
        token = (hv.get(names[0]) or os.environ.get(names[2])) if names else None
        try:
            manifest = models.fetch(ref, cache, token=token, endpoint=hv.get(names[1]) if names else None,
                                    log=(lambda line: None) if args.json else print)
        except models.ModelError as err:
            failed.append(f"{ref.source} (model {path}): {err} (fix: {err.fix})")
            continue
        rows.append({"model": path, "source": ref.source, "commit": manifest.get("commit"), "size": manifest["size"],
                     "where": manifest["where"], "directory": manifest["directory"]})
    if args.json:
        print(json.dumps({"models": rows, "errors": failed}, indent=2))
    else:
        lines = [("model", "source", "commit", "size", "from", "in")] + [
            (r["model"], r["source"], (r["commit"] or "-")[:12], models.human_bytes(r["size"]), r["where"],
             r["directory"]) for r in rows]
        print("\n".join(align(lines)))
        for line in failed:
            print(f"ERROR   {line}", file=sys.stderr)
        if args.bundle and not failed:
            print(f"bundle ready in {args.bundle}: copy it to the offline controller and set "
                  f"inferfleet_model_cache_dir: <its path> and inferfleet_models_offline: true", file=sys.stderr)
    return 1 if failed else 0


def cmd_bench_run(args) -> int:
    try:
        # asked for by name: measure, even what is unchanged since it was last measured (unless -e says otherwise)
        extravars = {"vllm_bench_rerun": "always", **_extravars(args.extra_vars)}
        if args.service:
            extravars["vllm_bench_services"] = args.service
        if args.update_baseline:
            extravars["vllm_bench_update_baseline"] = True
        with _run(args, "bench") as options:
            result = runner.run_playbook(args.inventory, "playbooks/70-bench.yml", limit=args.limit,
                                         extravars=extravars, command="bench",
                                         on_result=None if args.json else print_result, **options)
            if args.json:
                print(json.dumps(result.to_dict(), indent=2))
            else:
                print_recap(result)
    except (FileNotFoundError, ValueError) as err:
        return _report(err)
    return 0 if result.ok else 1


def _bench_records() -> list[Path]:
    from .paths import cache_dir

    root = Path(os.environ.get("INFERFLEET_RESULTS_DIR") or cache_dir() / "results") / "bench"
    return sorted(root.glob("*/record.json"), reverse=True)


def cmd_bench_list(args) -> int:
    rows = []
    for path in _bench_records():
        record = json.loads(path.read_text())
        rows.append({"run": record["run"], "status": record.get("status"), "runs": len(record.get("runs", {})),
                     "services": sorted({e["service"] for e in record.get("runs", {}).values()}),
                     "baseline": record.get("baseline"), "path": str(path.parent)})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no bench runs yet: inferfleet bench run -i INVENTORY")
    else:
        print("\n".join(align([("run", "status", "runs", "services", "baseline")] + [
            (r["run"], str(r["status"]), str(r["runs"]), ",".join(r["services"]), str(r["baseline"]))
            for r in rows])))
    return 0


def cmd_bench_show(args) -> int:
    records = _bench_records()
    found = records[:1] if args.id == "latest" else [p for p in records if p.parent.name.startswith(args.id)]
    if len(found) != 1:
        print(f"inferfleet: {'no' if not found else 'more than one'} bench run matches {args.id!r}", file=sys.stderr)
        return 2
    record = json.loads(found[0].read_text())
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"{found[0].parent}  status {record.get('status')}  baseline: {record.get('baseline')}")
    rows = [("host", "service", "dataset", "conc", "req/s", "out tok/s", "p99 TTFT ms", "p99 TPOT ms", "verdict")]
    for entry in record["runs"].values():
        metrics = entry["metrics"]
        rows.append((entry["host"], entry["service"], entry["dataset"], str(entry["concurrency"]),
                     *(f"{metrics[k]:.2f}" if isinstance(metrics.get(k), int | float) else "-"
                       for k in ("request_throughput", "output_throughput", "p99_ttft_ms", "p99_tpot_ms")),
                     "; ".join(entry["reasons"]) or "ok"))
    print("\n".join(align(rows)))
    report = found[0].with_name("report.html")
    if report.is_file():
        print(f"report: {report}")
    return 0


def _write_plan(path: Path, document: dict) -> None:
    """Readable by the user only: a plan holds the services' environment, which may carry tokens."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)


STATUS_COLUMNS = ("host", "service", "instance", "image", "state", "health", "port", "uptime")


def cmd_status(args) -> int:
    try:
        with _run(args, "status") as options:
            result = runner.run_playbook(args.inventory, "playbooks/status.yml", limit=args.limit, command="status",
                                         **options)
            rows = [row for host in sorted(result.hosts) for row in (result.facts(host, "inferfleet_status") or [])]
            doors = [row for host in sorted(result.hosts)
                     for row in (result.facts(host, "inferfleet_front_doors") or [])]
            if args.json:
                print(json.dumps({"instances": rows, "front_doors": doors, "ok": result.ok,
                                  "failures": [{"host": f.host, "msg": f.msg} for f in result.failures],
                                  "run_dir": str(result.run_dir)}, indent=2))
            else:
                for line in align([STATUS_COLUMNS] + [tuple(str(r[c]) for c in STATUS_COLUMNS) for r in rows]):
                    print(line)
                for door in doors:
                    print(f"{door['host']}: {door['summary']}")
                for failure in result.failures:
                    print(f"FAILED {failure.host}: {failure.msg}", file=sys.stderr)
    except (FileNotFoundError, ValueError) as err:
        return _report(err)
    return 0 if result.ok else 1


def cmd_down(args) -> int:
    try:
        with _run(args, "down") as options:
            result = runner.run_playbook(args.inventory, "playbooks/stop.yml", limit=args.limit, command="down",
                                         on_result=print_result, **options)
            print_recap(result)
    except (FileNotFoundError, ValueError) as err:
        return _report(err)
    return 0 if result.ok else 1


RUNS_COLUMNS = ("id", "command", "started", "elapsed", "ok", "inventory")


def _runs_row(entry: dict) -> tuple[str, ...]:
    elapsed = entry.get("elapsed")
    ok = {True: "ok", False: "FAILED"}.get(entry.get("ok"), "running" if runs.in_progress(entry) else "?")
    return (entry["id"], str(entry.get("command", "?")), str(entry.get("started", "?")),
            "-" if elapsed is None else f"{elapsed:.1f}s", ok, str(entry.get("inventory") or "-"))


def cmd_runs(args) -> int:
    try:
        root = runs.runs_root()
        if args.runs_command == "show":
            entry = runs.resolve(args.id, root)
            record = runs.read_record(Path(entry["path"]))
            if args.json or args.show_json:
                print(json.dumps({**record, "path": entry["path"]}, indent=2))
            else:
                print(entry["path"])
                print(json.dumps(record, indent=2))
            return 0
        entries = runs.list_runs(root)
    except (FileNotFoundError, LookupError) as err:
        print(f"inferfleet: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{key: e.get(key) for key in (*RUNS_COLUMNS, "rc", "path")} for e in entries], indent=2))
    elif not entries:
        print(f"no runs under {root} yet")
    else:
        print("\n".join(align([RUNS_COLUMNS] + [_runs_row(e) for e in entries])))
    return 0


def cmd_ee_build(args) -> int:
    from . import ee

    try:
        image = ee.build(tag=args.tag, push=args.push)
    except (RuntimeError, FileNotFoundError) as err:
        print(f"inferfleet: {err}", file=sys.stderr)
        return 1
    print(image)
    return 0


def cmd_sandbox_up(args) -> int:
    from .sandbox.profiles import parse_profiles

    try:
        names = parse_profiles(args.profiles)
    except ValueError as err:
        print(f"inferfleet: {err}", file=sys.stderr)
        return 2
    sandbox = _sandbox(args)
    hosts = sandbox.up(hosts=args.hosts, profile_names=names,
                       inventory_dir=Path(args.inventory_dir) if args.inventory_dir else None,
                       extra_ca=Path(args.extra_ca) if args.extra_ca else None, serving=not args.no_serving)
    _print_hosts(hosts)
    return 0


def _print_hosts(hosts) -> None:
    from .sandbox.profiles import get_profile

    print(f"{'HOST':<16}{'PROFILE':<12}{'STATE':<10}{'ADDRESS':<16}ACCELERATORS")
    for host in hosts:
        profile = get_profile(host.profile)
        accel = (f"{len(profile.devices)} x {profile.model} {profile.memory_gib} GB (SIMULATED)"
                 if profile.devices else "none (CPU only)")
        print(f"{host.name:<16}{host.profile:<12}{host.state:<10}{host.address or '-':<16}{accel}")


def cmd_sandbox_status(args) -> int:
    hosts = _sandbox(args).status()
    if args.json:
        print(json.dumps([h.__dict__ for h in hosts], indent=2))
    elif not hosts:
        print(f"sandbox '{args.name}': no hosts")
    else:
        _print_hosts(hosts)
    return 0


def cmd_sandbox_down(args) -> int:
    removed = _sandbox(args).down()
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print(f"sandbox '{args.name}': nothing to remove")
    return 0


def cmd_sandbox_fault(args) -> int:
    try:
        faults = _sandbox(args).set_fault(args.host, args.kind, args.value)
    except (KeyError, ValueError, RuntimeError) as err:
        print(f"inferfleet: {err}", file=sys.stderr)
        return 2
    print(json.dumps(faults, sort_keys=True))
    return 0


def cmd_rehearse(args) -> int:
    """The inventory's own plan, run by site.yml on a sandbox shaped like it (SIMULATED cards)."""
    from .rehearse import DEFAULT_REGISTRY_PORT, Refused, rehearse

    try:
        runner.vault_options(args.vault_id, args.vault_password_file)
        report = rehearse(args.inventory, limit=args.limit, stages=_split(args.stages), sample=args.sample,
                          faults=args.fault, keep=args.keep, name=args.name,
                          registry_port=args.registry_port or DEFAULT_REGISTRY_PORT,
                          state_root=Path(args.state_dir) if args.state_dir else None,
                          junit=Path(args.junit) if args.junit else None,
                          log=(lambda line: print(line, file=sys.stderr)) if args.json else print,
                          on_result=None if args.json else print_result,
                          vault_ids=args.vault_id, vault_password_files=args.vault_password_file,
                          secrets=_secrets(args))
    except Refused as err:
        print(err, file=sys.stderr)
        print("rehearsal not started: the inventory is refused as `inferfleet up` would refuse it", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        return _report(err)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.summary()))
        print(f"report: {report.directory} (junit.xml, report.json, substitutions.json, plan-diff.txt)")
    return 0 if report.ok else 1


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    lines = []
    for dist in ("inferfleet", "ansible-core", "ansible-runner"):
        try:
            lines.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            lines.append(f"{dist} not installed")
    return "\n".join(lines)


class _Version(argparse.Action):
    """--version, computed when asked (argparse's own wants the text when the parser is built)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_versions())
        parser.exit()


def _verbosity(parser: argparse.ArgumentParser, dest: str = "verbosity") -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, dest=dest,
                        help="more Ansible output, as ansible-playbook -v (-vvv for connection debugging)")


def _playbook_options(parser: argparse.ArgumentParser, record: bool = True) -> None:
    """What ansible-playbook users pass to every run: inventory, limit, verbosity, vault, become; --record for the
    commands that run through _run (up, status, down, bench run)."""
    parser.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    parser.add_argument("--limit", help="host pattern, as ansible-playbook --limit (checked against the inventory)")
    _verbosity(parser)
    parser.add_argument("--vault-id", action="append", default=[], metavar="[LABEL@]FILE|prompt",
                        help="vault identity, as ansible-playbook --vault-id (repeatable)")
    parser.add_argument("--vault-password-file", "--vault-pass-file", action="append", default=[], metavar="FILE",
                        help="file holding the vault password (repeatable)")
    parser.add_argument("-J", "--ask-vault-pass", "--ask-vault-password", action="store_true",
                        help="ask for the vault password")
    parser.add_argument("-K", "--ask-become-pass", action="store_true",
                        help="ask for the privilege escalation (become) password")
    if record:
        parser.add_argument("--record", nargs="?", const=True, default=None, metavar="ARA_SERVER_URL",
                            help="also record the run with ARA (pip install 'inferfleet[record]'): into "
                                 "$ARA_DATABASE_NAME or .cache/ara/ansible.sqlite, or to the ARA API server at "
                                 "the URL given; browse it with `ara playbook list` or `ara-manage runserver`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferfleet", description=__doc__)
    parser.add_argument("--version", action=_Version, help="print inferfleet's and Ansible's versions and exit")
    # also before the subcommand (inferfleet -vv up ...); a dest of its own, since a subparser's default would
    # overwrite it, and the two add up
    _verbosity(parser, dest="global_verbosity")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the pipeline (site.yml) against an inventory")
    _playbook_options(up)
    up.add_argument("--stages", help="comma-separated stages to run (default: all)")
    up.add_argument("--check", action="store_true", help="report what would change, change nothing")
    up.add_argument("--diff", action="store_true", help="show file differences")
    up.add_argument("-e", "--extra-vars", action="append", default=[], metavar="KEY=VALUE")
    up.add_argument("--json", action="store_true", help="print one JSON document instead of progress")
    up.add_argument("--plan", metavar="FILE", help="apply a plan saved by `inferfleet plan --save`; refused where the "
                                                    "inventory or the discovered cards changed since")
    up.set_defaults(func=cmd_up)

    plan = sub.add_parser("plan", help="compute the deployment offline and show it (exit 2 on errors)")
    plan.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    plan.add_argument("--json", action="store_true", help="print one JSON document")
    plan.add_argument("--limit", help="host pattern, as ansible-playbook --limit")
    plan.add_argument("--facts-dir", help="Ansible fact cache with discovered cards (default: .cache/facts)")
    plan.add_argument("--save", metavar="FILE", help="also write the plan to FILE, for `inferfleet up --plan FILE`")
    plan.set_defaults(func=cmd_plan)

    models_ = sub.add_parser("models", help="the models of an inventory's services")
    msub = models_.add_subparsers(dest="models_command", required=True)
    pull = msub.add_parser("pull", help="fetch every model the plan uses into the fleet cache, or a bundle "
                                        "directory to carry to an air-gapped controller")
    pull.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    pull.add_argument("--limit", help="host pattern, as ansible-playbook --limit")
    pull.add_argument("--bundle", metavar="DIR", help="fill DIR instead of the inventory's inferfleet_model_cache_dir")
    pull.add_argument("--json", action="store_true", help="print one JSON document")
    pull.set_defaults(func=cmd_models_pull)

    bench_ = sub.add_parser("bench", help="benchmark the services with vLLM's own client; list and show results")
    bsub = bench_.add_subparsers(dest="bench_command", required=True)
    brun = bsub.add_parser("run", help="run the bench stage (playbooks/70-bench.yml) against an inventory")
    _playbook_options(brun)
    brun.add_argument("--service", action="append", default=[], help="only this service (repeatable)")
    brun.add_argument("--update-baseline", action="store_true", help="accept these figures as the new baseline")
    brun.add_argument("-e", "--extra-vars", action="append", default=[], metavar="KEY=VALUE")
    brun.add_argument("--json", action="store_true", help="print one JSON document")
    brun.set_defaults(func=cmd_bench_run)
    blist = bsub.add_parser("list", help="the recorded bench runs, newest first")
    blist.add_argument("--json", action="store_true", help="print one JSON document")
    blist.set_defaults(func=cmd_bench_list)
    bshow = bsub.add_parser("show", help="one bench run: its table and report")
    bshow.add_argument("id", help="run id, a unique prefix of one, or `latest`")
    bshow.add_argument("--json", action="store_true", help="print the run's record")
    bshow.set_defaults(func=cmd_bench_show)

    status = sub.add_parser("status", help="show every model service instance: state, health, port, uptime")
    _playbook_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop and remove inferfleet's containers (others are left alone)")
    _playbook_options(down)
    down.set_defaults(func=cmd_down)

    runs_ = sub.add_parser("runs", help="list the recorded runs of up, status and down, newest first")
    runs_.add_argument("--json", action="store_true", help="print one JSON document")
    rsub = runs_.add_subparsers(dest="runs_command")
    show = rsub.add_parser("show", help="print a run's record (run.json) and its directory")
    show.add_argument("id", help="run id, a unique prefix of one, or `latest`")
    # a dest of its own: the subparser's default would overwrite `runs --json show ID`
    show.add_argument("--json", action="store_true", dest="show_json", help="one JSON document: record and path")
    runs_.set_defaults(func=cmd_runs)

    reh = sub.add_parser("rehearse", help="run an inventory's own plan on a sandbox shaped like it (SIMULATED cards)")
    _playbook_options(reh, record=False)
    reh.add_argument("--stages", help="comma-separated stages to run (default: all)")
    reh.add_argument("--sample", type=int, metavar="N", help="rehearse N hosts of each group (default: every host)")
    reh.add_argument("--fault", action="append", default=[], metavar="HOST:KIND[:VALUE]",
                     help="make a rehearsed host fail: card_held:CARD, card_missing:CARD, slow_link:CARD:FACTOR, "
                          "port_down:CARD:PORT, daemon_json_invalid, host_lost[:STAGE] (repeatable)")
    reh.add_argument("--keep", action="store_true", help="leave the rehearsal's sandbox up (the next run reuses it)")
    reh.add_argument("--junit", metavar="FILE", help="also write the JUnit XML report to FILE")
    reh.add_argument("--json", action="store_true", help="print one JSON document (the report)")
    reh.add_argument("--name", default="rehearse", help="the rehearsal sandbox's name")
    reh.add_argument("--registry-port", type=int, help="its registry's port (the mirror and hub take the next two; "
                                                       "default 5030)")
    reh.add_argument("--state-dir", help="where its keys, registry and reports live (default: <project>/.sandbox)")
    reh.set_defaults(func=cmd_rehearse)

    ee_ = sub.add_parser("ee", help="the execution environment AWX / AAP and ansible-navigator run inferfleet in")
    esub = ee_.add_subparsers(dest="ee_command", required=True)
    ebuild = esub.add_parser("build", help="build it with ansible-builder (execution-environment.yml), no network "
                                          "needed inside the build")
    ebuild.add_argument("--tag", default="inferfleet-ee:latest", help="the local image tag (default: %(default)s)")
    ebuild.add_argument("--push", metavar="REGISTRY", help="push it as REGISTRY/inferfleet/ee:<version>")
    ebuild.set_defaults(func=cmd_ee_build)

    sandbox = sub.add_parser("sandbox", help="the local test fleet with SIMULATED accelerators")
    sandbox.add_argument("--name", default="inferfleet", help="sandbox name (several can coexist)")
    sandbox.add_argument("--registry-port", type=int, default=5000)
    sandbox.add_argument("--state-dir", help="where keys and registry data live (default: <project>/.sandbox)")
    ssub = sandbox.add_subparsers(dest="sandbox_command", required=True)
    s_up = ssub.add_parser("up", help="create or update the fleet")
    s_up.add_argument("--hosts", type=int, help="number of hosts (default: one per profile)")
    s_up.add_argument("--profiles", default="gaudi2,ascend910b,h100,cpu",
                      help="comma-separated profiles, assigned to hosts in turn")
    s_up.add_argument("--inventory-dir", help="where to write hosts.yml (default: inventories/sandbox)")
    s_up.add_argument("--extra-ca", help="PEM bundle to trust inside hosts (e.g. a proxy's CA)")
    s_up.add_argument("--no-serving", action="store_true",
                      help="skip the vLLM CPU image and the models (the serve stage then has nothing to run)")
    s_up.set_defaults(func=cmd_sandbox_up)
    s_status = ssub.add_parser("status", help="show the fleet")
    s_status.add_argument("--json", action="store_true")
    s_status.set_defaults(func=cmd_sandbox_status)
    ssub.add_parser("down", help="remove everything `up` created").set_defaults(func=cmd_sandbox_down)
    s_fault = ssub.add_parser("fault", help="make a simulated host misbehave")
    s_fault.add_argument("host")
    s_fault.add_argument("kind", choices=FAULT_KINDS)
    s_fault.add_argument("value", nargs="?", help="a card index, CARD:PORT (port_down), CARD:FACTOR (slow_link), a "
                                                  "tool name (tool_missing) or a number")
    s_fault.set_defaults(func=cmd_sandbox_fault)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for the run record (runs.redact_argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # at a password prompt or mid-run: the run's record says so (runner.run_playbook), no traceback here
        print("\ninferfleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
