"""The `inferfleet` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import runner
from .runner import TaskResult
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
    print(f"\nrun {verdict} in {result.elapsed:.1f}s")


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


def cmd_up(args) -> int:
    stages = _split(args.stages)
    if not args.json:
        print(f"inferfleet: running {'stages ' + ','.join(stages) if stages else 'all stages'} on {args.inventory}"
              f"{' (check mode)' if args.check else ''}", flush=True)
    try:
        result = runner.up(args.inventory, stages=stages, limit=args.limit, check=args.check, diff=args.diff,
                           extravars=_extravars(args.extra_vars),
                           on_result=None if args.json else print_result)
    except (FileNotFoundError, ValueError) as err:
        print(f"inferfleet: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for error in result.errors:
            print(error, file=sys.stderr)
        print_recap(result)
    return 0 if result.ok else 1


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


def render_plan(plan) -> list[str]:
    """The plan as text: a table per host, then errors and warnings."""
    lines = []
    columns = ("instance", "task", "devices", "port", "tp", "mem", "kv/token", "weights/card", "max conc", "image")
    for name, host in sorted(plan.hosts.items()):
        accel = host.accelerator
        cards = f"{accel['count']} x {accel['model']} {accel['memory_gib']} GiB" if accel["count"] else "no cards"
        tags = [t for t, on in (("discovered", accel.get("discovered")), ("SIMULATED", accel.get("simulated"))) if on]
        lines.append(f"host {name} ({host.platform}, {cards}{', ' + ', '.join(tags) if tags else ''})")
        if not host.instances:
            lines.append("  no services")
            continue
        rows = [columns]
        for inst in host.instances:
            kv = inst["kv_cache"]
            weights = kv["weights_bytes"] / inst["tensor_parallel_size"] if kv["weights_bytes"] else None
            rows.append((inst["name"], inst["task"], ",".join(map(str, inst["devices"])) or "-", str(inst["port"]),
                         str(inst["tensor_parallel_size"]),
                         "-" if inst["memory_fraction"] is None else f"{inst['memory_fraction']:.2f}",
                         _size(kv["bytes_per_token"]) if kv["bytes_per_token"] else "-", _size(weights),
                         "-" if kv["max_concurrency"] is None else str(kv["max_concurrency"]), inst["image"]))
        lines += ["  " + line for line in align(rows)]
    for issue in plan.errors:
        lines.append(f"ERROR   {issue}")
    for issue in plan.warnings:
        lines.append(f"warning {issue}")
    lines.append(f"plan {'valid' if plan.ok else 'INVALID'}: {sum(len(h.instances) for h in plan.hosts.values())} "
                 f"instance(s) on {len(plan.hosts)} host(s), {len(plan.errors)} error(s), "
                 f"{len(plan.warnings)} warning(s)")
    return lines


def cmd_plan(args) -> int:
    from . import planner
    from .paths import project_dir

    inventory = Path(args.inventory)
    if not inventory.exists():
        print(f"inferfleet: inventory {inventory} does not exist", file=sys.stderr)
        return 2
    facts_dir = Path(args.facts_dir) if args.facts_dir else project_dir() / ".cache" / "facts"
    hosts = planner.hosts_from_inventory(inventory, facts_dir if facts_dir.is_dir() else None)
    if args.limit:
        hosts = [h for h in hosts if h.name in set(args.limit.split(","))]
    plan = planner.plan_hosts(hosts)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print("\n".join(render_plan(plan)))
    return 0 if plan.ok else 2


STATUS_COLUMNS = ("host", "service", "instance", "image", "state", "health", "port", "uptime")


def cmd_status(args) -> int:
    try:
        result = runner.run_playbook(args.inventory, "playbooks/status.yml", limit=args.limit)
    except (FileNotFoundError, ValueError) as err:
        print(f"inferfleet: {err}", file=sys.stderr)
        return 2
    rows = [row for host in sorted(result.hosts) for row in (result.facts(host, "inferfleet_status") or [])]
    if args.json:
        print(json.dumps({"instances": rows, "ok": result.ok,
                          "failures": [{"host": f.host, "msg": f.msg} for f in result.failures]}, indent=2))
    else:
        for line in align([STATUS_COLUMNS] + [tuple(str(r[c]) for c in STATUS_COLUMNS) for r in rows]):
            print(line)
        for failure in result.failures:
            print(f"FAILED {failure.host}: {failure.msg}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_down(args) -> int:
    try:
        result = runner.run_playbook(args.inventory, "playbooks/stop.yml", limit=args.limit,
                                     on_result=print_result)
    except (FileNotFoundError, ValueError) as err:
        print(f"inferfleet: {err}", file=sys.stderr)
        return 2
    print_recap(result)
    return 0 if result.ok else 1


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the pipeline (site.yml) against an inventory")
    up.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    up.add_argument("--stages", help="comma-separated stages to run (default: all)")
    up.add_argument("--limit", help="host pattern, as ansible-playbook --limit")
    up.add_argument("--check", action="store_true", help="report what would change, change nothing")
    up.add_argument("--diff", action="store_true", help="show file differences")
    up.add_argument("-e", "--extra-vars", action="append", default=[], metavar="KEY=VALUE")
    up.add_argument("--json", action="store_true", help="print one JSON document instead of progress")
    up.set_defaults(func=cmd_up)

    plan = sub.add_parser("plan", help="compute the deployment offline and show it (exit 2 on errors)")
    plan.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    plan.add_argument("--json", action="store_true", help="print one JSON document")
    plan.add_argument("--limit", help="comma-separated host names")
    plan.add_argument("--facts-dir", help="Ansible fact cache with discovered cards (default: .cache/facts)")
    plan.set_defaults(func=cmd_plan)

    status = sub.add_parser("status", help="show every model service instance: state, health, port, uptime")
    status.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    status.add_argument("--limit", help="host pattern")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop and remove inferfleet's containers (others are left alone)")
    down.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    down.add_argument("--limit", help="host pattern")
    down.set_defaults(func=cmd_down)

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
    s_fault.add_argument("kind", choices=["hold", "release", "missing", "present", "link_down", "link_up",
                                          "bandwidth_factor", "hugepages_limit", "clear"])
    s_fault.add_argument("value", nargs="?")
    s_fault.set_defaults(func=cmd_sandbox_fault)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
