"""Fuzz: `inferfleet plan` never prints a traceback, whatever the inventory holds.

1. Thousands of random mutations of a prod host's merged variables through inferfleet.planner.plan_hosts: it never
   raises, and every error names a host and a field and carries a fix.
2. A few hundred corruptions of a prod copy's files through `inferfleet plan -i DIR` in-process: it exits 0 or 2,
   never raises, and every ERROR line has the contract's shape.

Each case draws from its own random.Random(seed, iteration); INFERFLEET_FUZZ_SEED picks another seed and
INFERFLEET_FUZZ_SCALE multiplies the case counts. A failure message names the seed and the iteration.
"""

from __future__ import annotations

import copy
import os
import random
import re
import shutil
import traceback
from pathlib import Path

import yaml
from helpers import ROOT

from inferfleet import cli
from inferfleet.planner import HostInput, plan_hosts

PROD = ROOT / "inventories" / "prod"
SEED = int(os.environ.get("INFERFLEET_FUZZ_SEED", "20260117"))
SCALE = float(os.environ.get("INFERFLEET_FUZZ_SCALE", "1"))
VAR_CASES = int(3000 * SCALE)
FILE_CASES = int(150 * SCALE)
LOOPBACK = "127.0.0.1"
JUNK = [None, "", "eight", -1, 0, 1.5, 1e309, float("nan"), True, False, [], {}, "x" * 300, "a b",
        "{{ undefined }}", [1, "a"], {"k": "v"}, "/", "\x00", 10**30, -0.0, "8", "0.9", [None], {"": None},
        "../../etc/passwd", "ünïcödé", [[[]]], {"name": {}}]
UNKNOWN_KEYS = ["inferfleet_servics", "inferfleet_accelerater", "inferfleet_", "bogus", "max_num_seq", "", "a b",
                "x" * 300, "inferfleet_services ", "INFERFLEET_PLATFORM", "host_tuning_hugepage", "__class__"]
# the shape of a refusal line: `ERROR   host HOST: FIELD: MESSAGE (fix: FIX)` or `ERROR   inventory PATH: ...`
ERROR_LINE = re.compile(r"^ERROR   (host [^:]+|inventory .+?): [^\s:][^:]*: .+\(fix: .+\)$")


def _rng(kind: str, iteration: int) -> random.Random:
    return random.Random(f"{SEED}-{kind}-{iteration}")


# --- the prod inventory's merged variables ------------------------------------------------------------------------
def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _groups_of_hosts(hosts_file: Path) -> dict[str, str]:
    groups = {}
    for group, body in (_yaml(hosts_file)["all"].get("children") or {}).items():
        for host in (body or {}).get("hosts") or {}:
            groups[host] = group
    return groups


def prod_host_vars() -> dict[str, tuple[dict, tuple[str, ...]]]:
    """host -> (merged vars, groups): group_vars/all < group_vars/<group> < host_vars/<host>, as Ansible merges."""
    merged = {}
    for host, group in _groups_of_hosts(PROD / "hosts.yml").items():
        host_vars = {}
        for folder in (PROD / "group_vars" / "all", PROD / "group_vars" / group):
            for path in sorted(folder.glob("*.yml")):
                host_vars.update(_yaml(path))
        if (PROD / "host_vars" / f"{host}.yml").is_file():
            host_vars.update(_yaml(PROD / "host_vars" / f"{host}.yml"))
        host_vars["ansible_host"] = LOOPBACK
        merged[host] = (host_vars, (group,))
    return merged


def test_prod_vars_are_what_the_fuzz_starts_from():
    hosts = prod_host_vars()
    assert {"gaudi2-node01", "ascend-node01", "h100-node01", "gateway01"} <= set(hosts)
    plan = plan_hosts([HostInput(name, copy.deepcopy(v), groups, None, PROD) for name, (v, groups) in hosts.items()])
    assert not plan.errors, [str(e) for e in plan.errors]


# --- mutations of the variables -----------------------------------------------------------------------------------
def _slots(node, path=()):
    """(container, key, path) for every value below node."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            yield node, key, (*path, key)
            yield from _slots(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index, (*path, index)
            yield from _slots(value, (*path, index))


def _containers(node, path=()):
    """(container, path) for node and every dict or list below it."""
    if isinstance(node, (dict, list)):
        yield node, path
        for key, value in list(node.items() if isinstance(node, dict) else enumerate(node)):
            yield from _containers(value, (*path, key))


def mutate(host_vars: dict, rng: random.Random) -> str:
    """Apply one random mutation in place; return what it did."""
    slots = list(_slots(host_vars))
    kind = rng.choice(["replace", "replace", "replace", "delete", "add-key", "list-to-dict", "dict-to-list"])
    if kind == "replace" and slots:
        container, key, path = rng.choice(slots)
        container[key] = copy.deepcopy(rng.choice(JUNK))
        return f"replace {list(path)} with {container[key]!r:.40}"
    if kind == "delete" and slots:
        container, key, path = rng.choice(slots)
        del container[key]
        return f"delete {list(path)}"
    dicts = [(c, p) for c, p in _containers(host_vars) if isinstance(c, dict)]
    lists = [(c, p) for c, p in _containers(host_vars) if isinstance(c, list)]
    if kind == "add-key" and dicts:
        container, path = rng.choice(dicts)
        key = rng.choice(UNKNOWN_KEYS if path == () else [*UNKNOWN_KEYS, 1, None, 2.5])
        container[key] = copy.deepcopy(rng.choice(JUNK))
        return f"add {list(path)}[{key!r:.40}]"
    if kind == "list-to-dict" and lists:
        container, path = rng.choice(lists)
        _replace_at(host_vars, path, {str(i): v for i, v in enumerate(container)})
        return f"list-to-dict {list(path)}"
    if kind == "dict-to-list" and len(dicts) > 1:
        container, path = rng.choice(dicts[1:])
        _replace_at(host_vars, path, list(container.values()))
        return f"dict-to-list {list(path)}"
    key = rng.choice(UNKNOWN_KEYS)
    host_vars[key] = copy.deepcopy(rng.choice(JUNK))
    return f"add top-level {key!r:.40}"


def _replace_at(root, path, value):
    node = root
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _problems_in(plan) -> list[tuple[str, str]]:
    bad = []
    for problem in plan.errors:
        host, fld = getattr(problem, "host", None), getattr(problem, "field", None)
        text = str(problem)
        if not (isinstance(host, str) and host and isinstance(fld, str) and fld):
            bad.append(("error without host or field", f"host={host!r}, field={fld!r}: {text}"))
        elif "(fix: " not in text:
            bad.append(("error without a fix", f"error without a fix: {text}"))
    return bad


def _raised(exc: Exception) -> tuple[str, str]:
    """(kind, detail) of an exception: the kind is its type and where it was raised."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"
    return f"raised {type(exc).__name__} at {where}", f"raised {type(exc).__name__}: {str(exc)[:160]} at {where}"


class Failures:
    """Failures grouped by kind, with a count and the first example of each."""

    def __init__(self):
        self.kinds: dict[str, list] = {}

    def add(self, kind: str, detail: str, where: str) -> None:
        entry = self.kinds.setdefault(kind, [0, f"{where} -> {detail}"])
        entry[0] += 1

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def verdict(self, total: int, what: str) -> str:
        lines = [f"{len(self.kinds)} kind(s) of failure in {total} {what} (seed {SEED}; rerun with "
                 f"INFERFLEET_FUZZ_SEED={SEED}); the first example of each:"]
        ordered = sorted(self.kinds.items(), key=lambda item: (not item[0].startswith("raised"), -item[1][0]))
        lines += [f"  - [{count}x] {example:.600}" for _kind, (count, example) in ordered[:30]]
        return "\n".join(lines)


def test_plan_hosts_never_raises_on_mutated_prod_vars():
    hosts = prod_host_vars()
    names = sorted(hosts)
    failures = Failures()
    for iteration in range(VAR_CASES):
        rng = _rng("vars", iteration)
        name = rng.choice(names)
        base, groups = hosts[name]
        host_vars = copy.deepcopy(base)
        done = [mutate(host_vars, rng) for _ in range(rng.randint(1, 4))]
        where = f"seed {SEED} iteration {iteration} host {name}: {'; '.join(done)}"
        try:
            plan = plan_hosts([HostInput(name, host_vars, groups, None, PROD)])
            problems = _problems_in(plan)
        except Exception as exc:  # the bug being looked for
            problems = [_raised(exc)]
        for kind, detail in problems:
            failures.add(kind, detail, where)
    assert not failures, failures.verdict(VAR_CASES, "mutated host variable sets")


# --- corruptions of the files -------------------------------------------------------------------------------------
INSERTS = ["\t", "[", "{", "]", "}", ": ", "'", '"', "- ", "&a ", "*b ", "!!python/object/apply:os.system ", "%",
           "@", "`", "\x00", "{{ ", "{{ undefined }}", "\ufeff", "\n  ", ",", "#", "? ", "|", ">", "\\"]


def corrupt(text: str, rng: random.Random) -> tuple[str, str]:
    lines = text.splitlines(keepends=True) or [""]
    position = rng.randint(0, len(text))
    kind = rng.choice(["truncate", "empty", "tab", "insert", "insert", "insert", "drop-line", "dup-line",
                       "swap-lines", "indent-line", "binary"])
    if kind == "truncate":
        return text[:position], f"truncate at {position}"
    if kind == "empty":
        return "", "empty"
    if kind == "tab":
        line = rng.randrange(len(lines))
        lines[line] = "\t" + lines[line]
        return "".join(lines), f"tab before line {line + 1}"
    if kind == "insert":
        junk = rng.choice(INSERTS)
        return text[:position] + junk + text[position:], f"insert {junk!r} at {position}"
    line = rng.randrange(len(lines))
    if kind == "drop-line":
        del lines[line]
    elif kind == "dup-line":
        lines.insert(line, lines[line])
    elif kind == "swap-lines":
        other = rng.randrange(len(lines))
        lines[line], lines[other] = lines[other], lines[line]
    elif kind == "indent-line":
        lines[line] = " " * rng.randint(1, 3) + lines[line]
    else:
        return bytes(rng.randrange(256) for _ in range(64)).decode("latin-1"), "binary junk"
    return "".join(lines), f"{kind} {line + 1}"


def _prod_copy(dest: Path) -> Path:
    shutil.copytree(PROD, dest)
    hosts_file = dest / "hosts.yml"
    hosts_file.write_text(re.sub(r"(ansible_host:\s*)\S+", rf"\g<1>{LOOPBACK}", hosts_file.read_text()))
    for path in dest.rglob("*"):
        assert not path.is_file() or "10.20." not in path.read_text(), f"{path} still holds a prod address"
    return dest


def test_plan_cli_survives_corrupted_files(tmp_path, capsys):
    inventory = _prod_copy(tmp_path / "prod")
    files = sorted(p for p in inventory.rglob("*") if p.is_file() and p.suffix in (".yml", ".json"))
    originals = {path: path.read_text() for path in files}
    stamp = [2_000_000_000 * 10**9]

    def write(path: Path, text: str) -> None:
        # a fresh mtime on every write, so no cache keyed on (path, mtime) sees an older text
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        stamp[0] += 10**7
        os.utime(path, ns=(stamp[0], stamp[0]))

    failures = Failures()
    for iteration in range(FILE_CASES):
        rng = _rng("files", iteration)
        path = rng.choice(files)
        text, how = corrupt(originals[path], rng)
        where = f"seed {SEED} iteration {iteration}: {path.relative_to(inventory)}: {how}"
        write(path, text)
        problems = []
        capsys.readouterr()
        try:
            rc = cli.main(["plan", "-i", str(inventory)])
        except SystemExit as exc:
            rc = exc.code
            if rc not in (0, 2):
                problems.append(("raised SystemExit", f"SystemExit({exc.code!r})"))
        except Exception as exc:  # the bug being looked for
            rc = None
            problems.append(_raised(exc))
        finally:
            write(path, originals[path])
        out, err = capsys.readouterr()
        errors = [line for line in out.splitlines() if line.startswith("ERROR")]
        text = out + err
        if isinstance(rc, int) and rc not in (0, 2):
            problems.append(("exit neither 0 nor 2", f"exit {rc!r}: {text[-300:]!r}"))
        if "Traceback" in text:
            problems.append(("printed a traceback", f"printed {text[text.index('Traceback'):][:300]!r}"))
        if rc == 2 and not errors:
            problems.append(("exit 2 without an ERROR line", f"exit 2 without an ERROR line: {text[-300:]!r}"))
        if rc == 0 and errors:
            problems.append(("exit 0 with ERROR lines", f"exit 0 with ERROR lines: {errors[:2]}"))
        shape = "ERROR line not in the contract's shape"
        problems += [(shape, f"{shape}: {line!r:.300}") for line in errors if not ERROR_LINE.match(line)]
        for kind, detail in problems:
            failures.add(kind, detail, where)
    assert not failures, failures.verdict(FILE_CASES, "corrupted inventories")
