"""The fabric stage: which collective test a host runs, in which container, and whether what it measured passes.

Pure functions, offline. The planner calls `plan_fabric` for every host (so bad fabric settings are refused with
the rest of the plan, and the images stage pulls the test image with the serving ones); the fabric role's
action plugin (plugins/action/fabric.py) calls `resolve_group`, `container_command`, `parse_output`
and `judge` at run time.

The tools and their output formats: HabanaAI/hccl_demo, CANN's hccl_test and NVIDIA/nccl-tests. Every format
parsed here is one recorded from a real run, or pinned from the tool's own printf where no run was published
(tests/fixtures/fabric/NOTES-*.md names each source). Bandwidths are GB/s with GB = 1e9 bytes, as all three
tools print them (hccl_demo before August 2024 printed MB/s: converted).
"""

from __future__ import annotations

import hashlib
import re
import shlex

from .schema import size_bytes

GB_PER_MB = 1e-3


def tools() -> dict:
    from .planner import role_data

    return role_data("fabric", "tools.yml")


def default_thresholds() -> list[dict]:
    from .planner import role_data

    return role_data("fabric", "thresholds.yml")


# --- the plan ---------------------------------------------------------------------------------------------------
def plan_fabric(hv: dict, cards, image: str, access: dict | None, findings) -> dict:
    """The fabric part of a host's plan: whether the host runs the gate, and if so the tool, source, build,
    container and tests with their thresholds. Input errors are refused even where the host would skip the test.
    cards: planner.Cards; access: how the host's cards reach a container (planner.card_access), for all of them."""
    platform = cards.platform
    table = tools().get(platform)
    if table is None:
        return {"run": False, "reason": f"{platform} hosts have no collective to test"}
    tests = _tests(hv, table, findings)
    user = _user_thresholds(hv, table, findings)
    group = hv.get("fabric_group")
    if group and not table.get("multi_node"):
        findings.error("fabric_group", f"a {table['tool']} run across hosts needs MPI between the hosts' "
                                       f"containers, which inferfleet does not set up for {platform} yet, got "
                                       f"{group!r}", "leave fabric_group unset: each host then tests its own cards")
    if hv.get("fabric_enabled") is False or str(hv.get("fabric_enabled")).lower() in ("false", "no"):
        return {"run": False, "reason": "fabric_enabled is false"}
    if cards.count < 2 and not group:
        return {"run": False, "reason": f"{cards.count} card(s): no collective between cards to test"}
    if not image:
        findings.warn("fabric_image", f"is not set and the host has no {platform} image: the fabric test is "
                                      f"skipped", f"set fabric_image, or inferfleet_images.{platform}")
        return {"run": False, "reason": "no image to run the test in"}
    ascend_dir = hv.get("fabric_ascend_dir") or "/usr/local/Ascend/ascend-toolkit/latest"
    mpi_home = hv.get("fabric_mpi_home") or table.get("mpi_home", "")
    values = {"ascend_dir": ascend_dir, "mpi_home": mpi_home}
    source = dict(hv.get("fabric_source") or table["source"])
    if source.get("image_path"):
        source["image_path"] = source["image_path"].format(**values)
    env = {k: str(v) for k, v in sorted((hv.get("fabric_env") or {}).items())}
    library_path = [table["library_path"].format(**values)] if table.get("library_path") else []
    if hv.get("fabric_libfabric_root"):
        # seed 004: export LIBFABRIC_ROOT=/opt/libfabric; export LD_LIBRARY_PATH=$LIBFABRIC_ROOT/lib:...
        env["LIBFABRIC_ROOT"] = hv["fabric_libfabric_root"]
        library_path.append(f"{hv['fabric_libfabric_root']}/lib")
    container = dict(access or {})
    container["env"] = {**container.get("env", {}), **env}
    container["volumes"] = list(container.get("volumes", [])) + list(hv.get("fabric_volumes") or [])
    for test in tests:
        test["thresholds"] = thresholds_for(cards.model, test, cards.count, user)
    return {
        "run": True, "tool": table["tool"], "platform": platform, "image": image, "source": source,
        "build": hv.get("fabric_build_command") or table["build"].format(**values), "creates": table["creates"],
        "container": container, "library_path": library_path, "mpi_home": mpi_home, "tests": tests,
        "user_thresholds": user, "card_model": cards.model, "ranks_per_node": cards.count, "group": group,
        "port": hv.get("fabric_port", 5555), "link_check": hv.get("fabric_link_check", True) is not False,
        "ping": hv.get("fabric_ping", True) is not False,
        "external_ports": _external_ports(table, cards.model),
        "when_cards_held": hv.get("fabric_when_cards_held", "skip"), "timeout": int(hv.get("fabric_timeout", 1800)),
        "fail_fleet": hv.get("fabric_fail_fleet", False) is True,
        "work_dir": hv.get("fabric_work_dir") or "/var/lib/inferfleet/fabric",
    }


def _tests(hv: dict, table: dict, findings) -> list[dict]:
    given = hv.get("fabric_tests") or table["default_tests"]
    tests = []
    for position, entry in enumerate(given):
        name = entry.get("test")
        if name not in table["tests"]:
            findings.error(f"fabric_tests[{position}].test", f"{table['tool']} has no test {name!r}",
                           f"use one of {', '.join(table['tests'])}")
            continue
        size = entry.get("size") or entry.get("min_size") or "64m"
        test = {"test": name, "size": size_bytes(size), "size_text": str(size),
                "iterations": int(entry.get("iterations") or table["iterations"])}
        if table["tool"] != "hccl_demo":
            test["min_size"] = size_bytes(entry.get("min_size") or size)
            if test["min_size"] > test["size"]:
                findings.error(f"fabric_tests[{position}].min_size", f"is larger than size "
                                                                     f"({test['min_size']} > {test['size']} bytes)",
                               "give min_size <= size, e.g. min_size: 8K, size: 1G")
        tests.append(test)
    return tests


def _user_thresholds(hv: dict, table: dict, findings) -> dict:
    user = hv.get("fabric_thresholds") or {}
    for test, metrics in user.items():
        if test not in table["tests"]:
            findings.error(f"fabric_thresholds.{test}", f"{table['tool']} has no test {test!r}",
                           f"name a test of {table['tool']}: {', '.join(table['tests'])}")
            continue
        for metric in metrics:
            if metric not in table["metrics"]:
                findings.error(f"fabric_thresholds.{test}.{metric}", f"{table['tool']} measures no {metric!r}",
                               f"use one of {', '.join(table['metrics'])} (GB/s)")
    return user


def _external_ports(table: dict, model: str) -> list[int]:
    return next((ports for pattern, ports in (table.get("external_ports") or {}).items() if re.match(pattern, model)),
                [])


def thresholds_for(model: str, test: dict, ranks: int, user: dict) -> dict:
    """metric -> {min, source}: the card model's defaults for this test, size and rank count, under the host's
    fabric_thresholds."""
    found = {}
    for row in default_thresholds():
        if (re.match(row["model"], model or "") and row["test"] == test["test"]
                and size_bytes(row["size"]) == test["size"] and row["ranks"] == ranks):
            for metric, value in row.items():
                if metric not in ("model", "name", "test", "size", "ranks"):
                    found[metric] = {"min": float(value), "source": f"{row['name']} default ({row['size']}, "
                                                                    f"{row['ranks']} ranks)"}
    for metric, value in (user.get(test["test"]) or {}).items():
        found[metric] = {"min": float(value), "source": "fabric_thresholds"}
    return dict(sorted(found.items()))


# --- a fabric group across hosts ----------------------------------------------------------------------------------
def resolve_group(host: str, plan: dict, members: list[dict]) -> dict:
    """Where a host stands in its fabric_group. members: every host of the run in inventory order, each
    {name, address, group, ranks_per_node, running} (running: still in the play). Returns {nodes, node_id,
    comm_id, ranks, members} or {error}."""
    if not plan.get("group"):
        return {"nodes": 1, "node_id": 0, "comm_id": f"127.0.0.1:{plan['port']}", "ranks": plan["ranks_per_node"],
                "members": [host]}
    group = [m for m in members if m.get("group") == plan["group"]]
    stopped = [m["name"] for m in group if not m.get("running", True)]
    if stopped:
        return {"error": f"fabric_group {plan['group']!r}: {', '.join(stopped)} is not in this run (failed "
                         f"earlier or left out by --limit); a test across hosts needs every member"}
    sizes = {m["ranks_per_node"] for m in group}
    if len(sizes) > 1:
        counts = ", ".join(f"{m['name']}: {m['ranks_per_node']}" for m in group)
        return {"error": f"fabric_group {plan['group']!r}: members have different card counts ({counts}); every "
                         f"node runs the same number of ranks"}
    first = group[0]
    return {"nodes": len(group), "node_id": [m["name"] for m in group].index(host),
            "comm_id": f"{first['address']}:{plan['port']}",
            "ranks": plan["ranks_per_node"] * len(group), "members": [m["name"] for m in group]}


# --- the command ------------------------------------------------------------------------------------------------
def test_argv(plan: dict, test: dict, where: dict) -> list[str]:
    """The test's command line in the build directory (each tool's documented invocation)."""
    tool, per_node = plan["tool"], plan["ranks_per_node"]
    if tool == "hccl_demo":
        return ["python3", "run_hccl_demo.py", "--nranks", str(where["ranks"]), "--node_id", str(where["node_id"]),
                "--size", str(test["size"]), "--test", test["test"], "--loop", str(test["iterations"]),
                "--ranks_per_node", str(per_node)]
    if tool == "hccl_test":
        argv = [f"{plan['mpi_home']}/bin/mpirun", "-n", str(per_node), f"./bin/{test['test']}_test",
                "-b", str(test["min_size"]), "-e", str(test["size"]), "-f", "2", "-d", "fp32"]
        if test["test"] in ("all_reduce", "reduce", "reduce_scatter"):
            argv += ["-o", "sum"]
        return argv + ["-n", str(test["iterations"]), "-p", str(per_node)]
    return [f"./build/{test['test']}_perf", "-b", str(test["min_size"]), "-e", str(test["size"]), "-f", "2",
            "-g", str(per_node), "-n", str(test["iterations"])]


def container_command(plan: dict, argv: list[str]) -> list[str]:
    """The test container's command: the library path the tool needs, then the test, stopped after the timeout
    (coreutils timeout: exit 124)."""
    exports = ""
    if plan["library_path"]:
        exports = f'export LD_LIBRARY_PATH={":".join(plan["library_path"])}:"$LD_LIBRARY_PATH"; '
    return ["timeout", "-k", "30", str(plan["timeout"]), "sh", "-c", exports + "exec " + shlex.join(argv)]


def build_command(plan: dict, source_dir: str) -> list[str]:
    """Build in a copy of the source: the kept build directory holds the source and what the build made."""
    return ["sh", "-c", f"cp -a {shlex.quote(source_dir.rstrip('/'))}/. . && {plan['build']}"]


# --- reading the output -----------------------------------------------------------------------------------------
_PREFIX = re.compile(r"^(?:\d+: |\[\d+,\d+\]<std(?:out|err)>:)")  # srun --label, mpirun --tag-output


def _lines(text: str) -> list[str]:
    return [_PREFIX.sub("", line.rstrip("\r")) for line in (text or "").splitlines()]


_HCCL_HEAD = re.compile(r"^\[BENCHMARK\]\s+(hccl\w+)\((.*)\)\s*$")
_HCCL_BW = re.compile(r"\[BENCHMARK\]\s+(NW Bandwidth|Algo Bandwidth|Bandwidth)\s*:\s*([0-9.]+)\s*(GB|MB)/s")


def parse_hccl_demo(text: str) -> dict:
    """hccl_demo's [BENCHMARK] blocks (only the root rank prints one), its correctness lines and its errors.
    Formats: `Bandwidth : X MB/s` (2022, the NW figure), `NW/Algo Bandwidth : X MB/s` (2023-24), the same in GB/s
    (from August 2024); headlines (src!=dst, count=N, ...), (src!=dst, data_size=N, ...), (dataSize=N, ...)."""
    results, bad, errors, exit_code = [], [], [], None
    current = None
    for line in _lines(text):
        head = _HCCL_HEAD.match(line)
        if head:
            fields = dict(re.findall(r"(\w+)=([\w.]+)", head[2]))
            size = fields.get("dataSize") or fields.get("data_size")
            if size is None and fields.get("count"):
                size = int(fields["count"]) * (2 if fields.get("dtype") == "bfloat16" else 4)
            current = {"op": head[1], "size": int(size) if size is not None else None}
            results.append(current)
            continue
        for name, value, unit in _HCCL_BW.findall(line):
            if current is None:
                current = {"op": None, "size": None}
                results.append(current)
            figure = float(value) * (GB_PER_MB if unit == "MB" else 1.0)
            current["nw_bandwidth" if name in ("NW Bandwidth", "Bandwidth") else "algo_bandwidth"] = figure
        if "which is bad." in line:
            bad.append(line.strip())
        elif line.startswith(("HCCL demo error:", "HCCL demo exception:")) or "terminate called" in line:
            errors.append(line.strip())
        match = re.match(r"^Exiting HCCL demo with code: (-?\d+)", line)
        if match:
            exit_code = int(match[1])
    return {"results": [r for r in results if "nw_bandwidth" in r or "algo_bandwidth" in r], "bad": bad,
            "errors": errors, "exit_code": exit_code}


def parse_hccl_test(text: str) -> dict:
    """hccl_test's table: `data_size(Bytes): | aveg_time(us): | alg_bandwidth(GB/s): | check_result:` (the docs
    spell avg_time), rows split on '|' (the docs' rows are aligned differently from the binary's printf)."""
    rows, errors, in_table = [], [], False
    for line in _lines(text):
        if line.startswith("data_size(Bytes):"):
            in_table = True
            continue
        cells = [c.strip() for c in line.split("|")]
        if in_table and len(cells) == 4 and cells[0].isdigit():
            try:
                rows.append({"size": int(cells[0]), "time_us": float(cells[1]), "alg_bandwidth": float(cells[2]),
                             "check": cells[3]})
            except ValueError:
                errors.append(line.strip())
            continue
        if ("hccl interface return err" in line or "This is an error" in line or "check result failed" in line
                or "execute failed" in line or "failed, notify other process" in line):
            errors.append(line.strip())
    return {"rows": rows, "errors": errors}


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def parse_nccl_tests(text: str) -> dict:
    """nccl-tests' table and footer. The table header says which columns come before `time` (redop and root vary
    by collective and version) and whether each placement ends in `error` (up to v2.11, a max delta) or `#wrong`
    (v2.13+, a count; N/A when validation is off). Rank and NCCL log lines, srun --label and mpirun --tag-output
    prefixes are skipped."""
    rows, errors = [], []
    out_of_bounds = oob_status = avg_busbw = version = None
    head, old_layout = 5, False  # columns before the first `time`; whether placements end in `error`
    for line in _lines(text):
        stripped = line.strip()
        if stripped.startswith("#"):
            words = stripped.lstrip("#").split()
            if words[:2] == ["size", "count"] and ("time" in words or "cputime" in words):
                head = words.index("time" if "time" in words else "cputime")
                old_layout = "error" in words
            match = re.match(r"#\s*Out of bounds values\s*:\s*(\d+)\s*(\w*)", stripped)
            if match:
                out_of_bounds, oob_status = int(match[1]), match[2] or None
            match = re.match(r"#\s*Avg bus bandwidth\s*:\s*([0-9.eE+-]+)", stripped)
            if match:
                avg_busbw = float(match[1])
            match = re.match(r"#\s*nccl-tests version (\S+)", stripped)
            if match:
                version = match[1]
            continue
        if re.search(r"Test (?:CUDA |NCCL )?failure", stripped):
            errors.append(stripped)
            continue
        parts = stripped.split()
        if len(parts) != head + 8 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        placements = []
        for chunk in (parts[head:head + 4], parts[head + 4:]):
            # before v2.13 the column is the max delta (`error`), not a count of wrong elements
            placements.append({"time_us": _number(chunk[0]), "algbw": _number(chunk[1]), "busbw": _number(chunk[2]),
                               "wrong": None if chunk[3] == "N/A" or old_layout else _number(chunk[3])})
        rows.append({"size": int(parts[0]), "count": int(parts[1]), "type": parts[2],
                     "out_of_place": placements[0], "in_place": placements[1]})
    return {"rows": rows, "out_of_bounds": out_of_bounds, "oob_status": oob_status, "avg_busbw": avg_busbw,
            "errors": errors, "version": version}


def parse_output(tool: str, text: str) -> dict:
    return {"hccl_demo": parse_hccl_demo, "hccl_test": parse_hccl_test, "nccl-tests": parse_nccl_tests}[tool](text)


# --- the verdict ------------------------------------------------------------------------------------------------
def measured(tool: str, parsed: dict) -> dict:
    """metric -> GB/s from a parsed run."""
    if tool == "hccl_demo":
        last = parsed["results"][-1] if parsed["results"] else {}
        return {k: last[k] for k in ("nw_bandwidth", "algo_bandwidth") if k in last}
    if tool == "hccl_test":
        rows = [r for r in parsed["rows"] if r["alg_bandwidth"] is not None]
        if not rows:
            return {}
        return {"alg_bandwidth": rows[-1]["alg_bandwidth"], "alg_bandwidth_peak": max(r["alg_bandwidth"] for r in rows)}
    rows = parsed["rows"]
    if not rows:
        return {}
    figures = {"busbw": rows[-1]["out_of_place"]["busbw"], "algbw": rows[-1]["out_of_place"]["algbw"],
               "busbw_peak": max(p["busbw"] or 0 for r in rows for p in (r["out_of_place"], r["in_place"])),
               "algbw_peak": max(p["algbw"] or 0 for r in rows for p in (r["out_of_place"], r["in_place"]))}
    if parsed["avg_busbw"] is not None:
        figures["busbw_avg"] = parsed["avg_busbw"]
    return figures


def wrong_results(tool: str, parsed: dict) -> list[str]:
    """What the test itself says went wrong: wrong results or errors."""
    if tool == "hccl_demo":
        return parsed["bad"][:3] + parsed["errors"][:3]
    if tool == "hccl_test":
        failed = [f"{r['size']} bytes: check_result {r['check']}" for r in parsed["rows"] if r["check"] == "failed"]
        return failed[:3] + parsed["errors"][:3]
    found = [f"{r['size']} bytes: {p['wrong']:g} wrong element(s) ({name})" for r in parsed["rows"]
             for name, p in (("out-of-place", r["out_of_place"]), ("in-place", r["in_place"]))
             if p["wrong"]]
    if parsed["out_of_bounds"]:
        found.insert(0, f"Out of bounds values: {parsed['out_of_bounds']} {parsed['oob_status'] or ''}".strip())
    return found[:4] + parsed["errors"][:3]


def judge(plan: dict, test: dict, where: dict, exit_code: int | None, output: str,
          from_root: dict | None = None) -> dict:
    """One test's row of the report: measured figures, thresholds and the status (pass, fail, measured: no
    threshold), with the reasons of a failure. from_root: the group's first node's measured figures (hccl_demo
    prints its result on the root rank only)."""
    tool = plan["tool"]
    parsed = parse_output(tool, output)
    figures = measured(tool, parsed) or dict((from_root or {}).get("measured") or {})
    reasons = []
    if exit_code == 124:
        reasons.append(f"timed out after {plan['timeout']} s (fabric_timeout)")
    reasons += wrong_results(tool, parsed)
    if exit_code not in (0, None, 124) and not reasons:
        reasons.append(exit_reason(exit_code, output))
    root_only = tool == "hccl_demo" and where.get("node_id", 0) > 0
    if not figures and not reasons and not root_only:
        reasons.append("printed no bandwidth figure")
    thresholds = test["thresholds"]
    if exit_code in (0, None):  # a test that did not finish has no figure to judge
        for metric, rule in thresholds.items():
            value = figures.get(metric)
            if value is not None and value <= rule["min"]:
                reasons.append(f"{metric} {value:.2f} GB/s is not above the threshold {rule['min']:g} GB/s "
                               f"({rule['source']})")
    status = "fail" if reasons else ("pass" if thresholds else "measured")
    return {"test": test["test"], "size": test["size"], "ranks": where["ranks"], "nodes": where["nodes"],
            "measured": figures, "thresholds": thresholds, "status": status, "reasons": reasons,
            "exit_code": exit_code}


def exit_reason(exit_code: int, output: str) -> str:
    """A test that exited non-zero without saying why in a known line: its exit (or signal), how far its table got,
    and its last words."""
    lines = [line.strip() for line in _lines(output) if line.strip()]
    rows = sum(1 for line in lines if _TABLE_ROW.match(line))
    words = [line for line in lines if not (_TABLE_ROW.match(line) or line.startswith("#")
                                            or line.startswith("data_size(Bytes):"))][-2:]
    how = f"killed by signal {exit_code - 128}" if exit_code > 128 else f"exited with code {exit_code}"
    return how + (f" after {rows} result row(s)" if rows else "") + (": " + " | ".join(words) if words else "")


_TABLE_ROW = re.compile(r"^\s*\d+\s")


def table_rows(report: list[dict]) -> list[list[str]]:
    """The stage's table: test, size, ranks, metric, measured, threshold and that figure's verdict (ok, BELOW, or
    - without a threshold); the host's status and reasons follow it."""
    rows = [["test", "size", "ranks", "metric", "measured GB/s", "threshold GB/s", "verdict"]]
    for row in report:
        for metric in sorted(set(row["measured"]) | set(row["thresholds"])) or ["-"]:
            value = row["measured"].get(metric)
            rule = row["thresholds"].get(metric)
            verdict = "-" if rule is None or value is None else ("ok" if value > rule["min"] else "BELOW")
            rows.append([row["test"], human_size(row["size"]), str(row["ranks"]), metric,
                         f"{value:.2f}" if value is not None else "-", f"{rule['min']:g}" if rule else "-", verdict])
    return rows


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def human_size(size: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
