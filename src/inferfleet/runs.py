"""Run directories: one per `inferfleet up/status/down` (and per API run), the newest N kept.

A run directory is `<runs root>/<UTC YYYYmmddTHHMMSSZ>-<command>-<6 hex>/`. It is ansible-runner's
private_data_dir (its artifacts stay there) and holds `run.json`, the record of the run, and `log.txt`, what the
CLI printed. Secrets never go in: the record keeps the command line with secret-looking -e values redacted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .paths import cache_dir

RECORD = "run.json"
LOG = "log.txt"
DEFAULT_KEEP = 50
RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-([a-z0-9_-]+)-([0-9a-f]{6})$")
# -e values whose key says they hold a secret; Ansible's own are *_pass, *_password, *_secret, *_token, *_key.
SENSITIVE = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)
REDACTED = "<redacted>"


def runs_root() -> Path:
    """$INFERFLEET_RUNS_DIR, else <project>/.cache/runs."""
    env = os.environ.get("INFERFLEET_RUNS_DIR")
    return Path(env).expanduser().resolve() if env else cache_dir() / "runs"


def keep_count() -> int:
    """How many runs to keep: $INFERFLEET_RUNS_KEEP, default 50."""
    raw = os.environ.get("INFERFLEET_RUNS_KEEP", "").strip()
    if not raw:
        return DEFAULT_KEEP
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"INFERFLEET_RUNS_KEEP must be a whole number >= 1, got {raw!r} "
                         f"(unset it to keep the newest {DEFAULT_KEEP} runs)")
    return int(raw)


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds: every record uses it, so the strings sort as the times do."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_id(command: str, moment: datetime, token: str) -> str:
    # Only [a-z0-9_-] in the command part, so an id is always a safe single path component the pattern matches.
    name = re.sub(r"[^a-z0-9_-]+", "_", command.lower()).strip("_") or "run"
    return f"{moment.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{name}-{token}"


def create(command: str, root: Path | None = None, record: dict | None = None, keep: int | None = None,
           now: datetime | None = None) -> Path:
    """Make a new run directory with its first record, then prune the oldest runs beyond `keep`."""
    keep = keep_count() if keep is None else keep
    root = root or runs_root()
    root.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(timezone.utc)
    for _ in range(20):
        path = root / run_id(command, now, secrets.token_hex(3))
        try:
            # 0700: the artifacts carry the full Ansible output, which can name hosts, users and paths
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"cannot make a unique run directory under {root}: 20 names taken in the same second")
    write_record(path, {"id": path.name, "command": command, "started": timestamp(now), "pid": os.getpid(),
                        "rc": None, "ok": None, **(record or {})})
    prune(root, keep, protect=path)
    return path


def write_record(run_dir: Path, record: dict) -> None:
    # Through a temporary file and a rename, so `inferfleet runs` never reads half a record.
    tmp = run_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, run_dir / RECORD)


def read_record(run_dir: Path) -> dict:
    """The run's record; {} when it has none or it is unreadable (a run being deleted, a disk full)."""
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def update_record(run_dir: Path, changes: dict) -> dict:
    record = {**read_record(run_dir), **changes}
    write_record(run_dir, record)
    return record


def _sort_key(entry: dict) -> tuple[str, str]:
    match = RUN_ID.match(entry["id"])
    stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    # the record's start has microseconds and orders runs of the same second; the id's second is the fallback
    return entry.get("started") or timestamp(stamp), entry["id"]


def list_runs(root: Path | None = None) -> list[dict]:
    """Every run under the root, newest first: its record plus `id` and `path`. Other entries are ignored."""
    root = root or runs_root()
    if not root.is_dir():
        return []
    entries = [{**read_record(path), "id": path.name, "path": str(path)}
               for path in root.iterdir() if path.is_dir() and RUN_ID.match(path.name)]
    return sorted(entries, key=_sort_key, reverse=True)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def in_progress(entry: dict) -> bool:
    """Not finished and its process still alive: a run another inferfleet is doing right now."""
    return not entry.get("finished") and _alive(entry.get("pid"))


def prune(root: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete the oldest runs beyond the newest `keep`; never `protect` nor a run in progress. Returns the deleted."""
    removed = []
    for entry in list_runs(root)[keep:]:
        path = Path(entry["path"])
        if path == protect or in_progress(entry):
            continue
        # only directories named as runs are listed, so nothing else under a user-chosen root is touched
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def resolve(ref: str, root: Path | None = None) -> dict:
    """The run `ref` names: `latest`, a whole id or a unique prefix of one. LookupError says why none."""
    root = root or runs_root()
    entries = list_runs(root)
    if not entries:
        raise LookupError(f"no runs under {root} yet: `inferfleet up`, `status` and `down` record one each")
    if ref == "latest":
        return entries[0]
    matches = [e for e in entries if e["id"] == ref] or [e for e in entries if e["id"].startswith(ref)]
    if not matches:
        raise LookupError(f"no run {ref!r} under {root}: `inferfleet runs` lists them")
    if len(matches) > 1:
        shown = ", ".join(e["id"] for e in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise LookupError(f"run {ref!r} is ambiguous, {len(matches)} runs start with it ({shown}): give more of the id")
    return matches[0]


def _redact_extra(value: str) -> str:
    if value.startswith("@"):
        return value
    if value.lstrip().startswith(("{", "[")):
        return REDACTED if SENSITIVE.search(value) else value
    key, sep, _ = value.partition("=")
    return f"{key}={REDACTED}" if sep and SENSITIVE.search(key) else value


def _is_extra_vars(option: str) -> bool:
    # argparse takes any unambiguous prefix of a long option: --extra, --extra-v
    return option == "-e" or (len(option) >= 3 and "--extra-vars".startswith(option))


def redact_argv(argv: list[str]) -> list[str]:
    """The command line for the record: -e values whose key looks secret (password, token, ...) redacted."""
    redacted: list[str] = []
    value_next = False
    for arg in argv:
        if value_next:
            redacted.append(_redact_extra(arg))
            value_next = False
        elif _is_extra_vars(arg):
            redacted.append(arg)
            value_next = True
        elif arg.startswith("--") and "=" in arg and _is_extra_vars(arg.split("=", 1)[0]):
            option, value = arg.split("=", 1)
            redacted.append(f"{option}={_redact_extra(value)}")
        elif arg.startswith("-e") and not arg.startswith("--"):
            redacted.append("-e" + _redact_extra(arg[2:]))
        else:
            redacted.append(arg)
    return redacted


def task_seconds(run_dir: Path, task: str, host: str | None = None) -> float:
    """How long a task took in a recorded run (on `host`, or its first host to report it), from ansible-runner's
    job events; NaN when the run has no such task."""
    for path in sorted((run_dir / "artifacts").rglob("job_events/*.json")):
        event = json.loads(path.read_text())
        data = event.get("event_data", {})
        if event.get("event") == "runner_on_ok" and data.get("task") == task and host in (None, data.get("host")):
            return float(data.get("duration") or 0.0)
    return float("nan")
