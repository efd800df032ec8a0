"""Stage bench: vLLM's own benchmark client (`vllm bench serve`) against every service of the plan, its results kept
with their context, a regression gate against a baseline, the knee of a concurrency sweep, and a report.

Pure functions (the role's action plugin, plugins/action/bench.py, and `inferfleet bench` call them):
`client_argv` writes the client's command for a service, `summarize` reads its JSON result, `knee` and `gate`
decide, `render_report` draws the HTML report. `parse_summary` reads the summary the client prints, for logs of
runs made by hand. The formats: tests/fixtures/bench/NOTES.md (the client's source and recorded runs).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from pathlib import Path

# metric -> (direction: +1 higher is better, -1 lower is better; label)
GATED = {"output_throughput": (1, "output throughput (tok/s)"), "p99_ttft_ms": (-1, "p99 TTFT (ms)"),
         "p99_tpot_ms": (-1, "p99 TPOT (ms)")}
SHOWN = ("completed", "failed", "request_throughput", "output_throughput", "total_token_throughput", "median_ttft_ms",
         "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_e2el_ms", "p99_e2el_ms")
DATA_DIR = "/bench/data"
OUT_DIR = "/bench/out"


# --- the client's command ---------------------------------------------------------------------------------------
def client_argv(instance: dict, settings: dict, concurrency: int, dataset_file: str | None, result_name: str) -> \
        list[str]:
    """`vllm bench serve` for one service instance, run on its host (--net host): seed 002's command with the
    stage's settings, the model named by its path as there (every instance answers to it). Pooling services use
    the client's embeddings and rerank backends."""
    task = instance["task"]
    argv = ["vllm", "bench", "serve", "--base-url", f"http://127.0.0.1:{instance['port']}",
            "--model", instance["model"], "--tokenizer", instance["model"]]
    if task == "embed":
        argv += ["--backend", "openai-embeddings", "--endpoint", "/v1/embeddings", "--dataset-name", "random",
                 "--random-input-len", str(settings["input_len"]), "--random-output-len", "1"]
    elif task == "rerank":
        argv += ["--backend", "vllm-rerank", "--endpoint", "/v1/rerank", "--dataset-name", "random-rerank",
                 "--random-input-len", str(settings["input_len"])]
    elif settings["dataset"] == "shared_prefix":
        argv += ["--backend", "openai", "--dataset-name", "custom", "--dataset-path", dataset_file,
                 "--custom-output-len", str(settings["output_len"])]
    elif settings["dataset"] == "sharegpt":
        argv += ["--backend", "openai", "--dataset-name", "sharegpt", "--dataset-path", dataset_file,
                 "--sharegpt-output-len", str(settings["output_len"])]
    else:
        argv += ["--backend", "openai", "--dataset-name", "random", "--random-input-len", str(settings["input_len"]),
                 "--random-output-len", str(settings["output_len"])]
    if task == "generate":
        argv += ["--ignore-eos"]  # every request makes output_len tokens: runs compare
    if settings.get("warmups"):
        argv += ["--num-warmups", str(settings["warmups"])]
    argv += ["--max-concurrency", str(concurrency), "--num-prompts", str(settings["num_prompts"]),
             "--percentile-metrics", "ttft,tpot,itl,e2el" if task == "generate" else "e2el",
             "--metric-percentiles", "50,90,99", "--save-result", "--result-dir", OUT_DIR,
             "--result-filename", result_name, "--disable-tqdm"]
    return argv + [str(a) for a in settings.get("extra_args") or []]


# --- results ----------------------------------------------------------------------------------------------------
def summarize(result: dict) -> dict:
    """The figures of a client's JSON result (--save-result) that the stage keeps and judges."""
    found = {key: result[key] for key in SHOWN if isinstance(result.get(key), int | float)}
    found["failed"] = int(result.get("num_prompts", 0) or 0) - int(result.get("completed", 0) or 0) \
        if "num_prompts" in result else found.get("failed", 0)
    if not found.get("output_throughput") and isinstance(result.get("request_throughput"), int | float):
        # pooling runs make no output tokens: their throughput is the requests'
        found["output_throughput"] = None
    return found


_LINE = re.compile(r"^(?P<label>[A-Za-z][^:]*?):\s+(?P<value>-?[0-9][0-9.,]*)\s*$")
_LABELS = {
    "successful requests": "completed", "failed requests": "failed", "benchmark duration (s)": "duration",
    "total input tokens": "total_input_tokens", "total generated tokens": "total_output_tokens",
    "request throughput (req/s)": "request_throughput", "output token throughput (tok/s)": "output_throughput",
    "total token throughput (tok/s)": "total_token_throughput", "maximum request concurrency": "max_concurrency",
    "peak output token throughput (tok/s)": "max_output_tokens_per_s",
    "peak concurrent requests": "max_concurrent_requests", "request goodput (req/s)": "request_goodput",
}


def parse_summary(text: str) -> dict:
    """The summary `vllm bench serve` prints (`============ Serving Benchmark Result ============`): `Label: value`
    lines, with the latency sections' `Mean/Median/P99 TTFT (ms)` read as mean_ttft_ms, median_ttft_ms,
    p99_ttft_ms (the keys of the client's JSON result)."""
    found: dict = {}
    inside = False
    for line in (text or "").splitlines():
        if "Serving Benchmark Result" in line:
            inside, found = True, {}
            continue
        if not inside:
            continue
        if line.startswith("=" * 10) and found:
            break
        match = _LINE.match(line.strip())
        if not match:
            continue
        label, value = match["label"].strip(), float(match["value"].replace(",", ""))
        latency = re.match(r"^(Mean|Median|P(\d+(?:\.\d+)?)|Std)\s+(TTFT|TPOT|ITL|E2EL)\s+\(ms\)$", label)
        if latency:
            which = latency[1].lower() if not latency[2] else "p" + latency[2].rstrip("0").rstrip(".")
            found[f"{which}_{latency[3].lower()}_ms"] = value
        elif label.lower() in _LABELS:
            key = _LABELS[label.lower()]
            found[key] = int(value) if key in ("completed", "failed", "total_input_tokens", "total_output_tokens",
                                                "max_concurrency") else value
    return found


# --- decisions --------------------------------------------------------------------------------------------------
def knee(runs: list[dict], slo: dict) -> int | None:
    """The highest concurrency whose p99 TTFT and TPOT stay within the SLOs (None: none does, or no SLO)."""
    if not slo:
        return None
    fits = [r["concurrency"] for r in runs
            if all(r["metrics"].get(metric) is not None and r["metrics"][metric] <= limit
                   for metric, limit in slo.items())]
    return max(fits) if fits else None


def gate(now: dict, baseline: dict | None, tolerance: dict) -> list[str]:
    """What regressed past its tolerance, each naming the metric, the baseline, now and the allowed band."""
    if not baseline:
        return []
    reasons = []
    for metric, allowed in sorted(tolerance.items()):
        direction, label = GATED[metric]
        before, after = baseline.get(metric), now.get(metric)
        if not isinstance(before, int | float) or not isinstance(after, int | float) or before <= 0:
            continue
        if direction > 0 and after < before * (1 - allowed):
            reasons.append(f"{label} fell to {after:.2f} from {before:.2f}; allowed down to "
                           f"{before * (1 - allowed):.2f} ({allowed:.0%})")
        elif direction < 0 and after > before * (1 + allowed):
            reasons.append(f"{label} rose to {after:.2f} from {before:.2f}; allowed up to "
                           f"{before * (1 + allowed):.2f} ({allowed:.0%})")
    return reasons


def bench_key(host: str, service: str, dataset: str, concurrency: int) -> str:
    return f"{host}/{service}/{dataset}/c{concurrency}"


def fingerprint(instance: dict, settings: dict, concurrency: int, dataset_file: str | None,
                container_id: str | None) -> str | None:
    """What one benchmark run measures: the client's command (every setting that shapes the load, the model, the
    port) and the container that serves the instance, which serve recreates whenever its image, model, arguments
    or environment change. None when no running container serves it: there is nothing to compare, so it is
    measured."""
    if not container_id:
        return None
    argv = client_argv(instance, settings, concurrency, dataset_file, "result.json")
    return hashlib.sha256(json.dumps([argv, container_id]).encode()).hexdigest()[:16]


def _earlier_records(results_dir: Path, run_id: str):
    """(run, record) of every run recorded before run `run_id`, oldest first."""
    for record in sorted((results_dir / "bench").glob("*/record.json")):
        if record.parent.name < run_id:
            yield record.parent.name, json.loads(record.read_text())


def last_measurements(results_dir: Path, run_id: str) -> dict[str, dict]:
    """The newest measurement of each bench key before run `run_id`, with the run it comes from."""
    latest: dict[str, dict] = {}
    for run, document in _earlier_records(results_dir, run_id):
        for key, entry in document.get("runs", {}).items():
            if entry.get("metrics"):
                latest[key] = dict(entry, run=run)
    return latest


def unchanged_since(latest: dict | None, wanted: str | None) -> dict | None:
    """The earlier measurement that still stands for a run of fingerprint `wanted`: one of the same fingerprint that
    passed its gate. A failed one is measured again, so that a fix shows."""
    if latest is None or wanted is None or latest.get("fingerprint") != wanted or latest.get("reasons"):
        return None
    return latest


def baseline_figures(results_dir: Path, choice: str, run_id: str) -> tuple[dict, str]:
    """The baseline's figures by bench key, and where they come from: the last earlier run that measured each
    key (`previous`), a file on the controller, or nothing (`none`)."""
    if choice == "none":
        return {}, "none"
    if choice != "previous":
        path = Path(choice)
        document = json.loads(path.read_text())
        return {key: entry["metrics"] for key, entry in document["runs"].items()}, str(path)
    figures: dict = {}
    for run, document in _earlier_records(results_dir, run_id):
        for key, entry in document.get("runs", {}).items():
            # a run that failed the gate is no baseline, unless it was accepted (--update-baseline)
            if entry.get("metrics") and (not entry.get("reasons") or document.get("accepted")):
                figures[key] = dict(entry["metrics"], _run=run)
    return figures, "previous runs"


# --- the report -------------------------------------------------------------------------------------------------
def _figure_png(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    draw(axes)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def render_report(record: dict) -> str:
    """One HTML file: per service a table of its runs and plots (throughput and TTFT/TPOT percentiles against
    concurrency, this run against the baseline), then the context the runs were made in."""
    services: dict = {}
    for _key, entry in sorted(record["runs"].items()):
        services.setdefault((entry["host"], entry["service"], entry["dataset"]), []).append(entry)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>inferfleet bench "
             f"{html.escape(record['run'])}</title><style>body{{font-family:sans-serif;margin:2em}}"
             "table{border-collapse:collapse}td,th{border:1px solid #999;padding:3px 8px;text-align:right}"
             ".fail{color:#b00;font-weight:bold}.simulated{color:#a60}</style></head><body>",
             f"<h1>inferfleet bench {html.escape(record['run'])}</h1>",
             f"<p>status: <b class='{'fail' if record['status'] == 'fail' else ''}'>{record['status']}</b>; baseline: "
             f"{html.escape(record['baseline'])}</p>"]
    if record.get("simulated"):
        parts.append("<p class='simulated'>SIMULATED accelerators: the servers are vLLM's CPU build; these figures "
                     "say nothing about real cards.</p>")
    for (host, service, dataset), runs in services.items():
        runs.sort(key=lambda r: r["concurrency"])
        parts.append(f"<h2>{html.escape(service)} on {html.escape(host)} ({html.escape(dataset)})</h2>")
        shown = [k for k in SHOWN if any(r["metrics"].get(k) is not None for r in runs)]  # pooling: no TTFT
        header = "".join(f"<th>{html.escape(k)}</th>" for k in ("concurrency", *shown, "verdict"))
        rows = []
        for run in runs:
            cells = "".join(f"<td>{_cell(run['metrics'].get(k))}</td>" for k in shown)
            verdict = "; ".join(run["reasons"]) or run.get("note") or "ok"
            rows.append(f"<tr><td>{run['concurrency']}</td>{cells}<td class='{'fail' if run['reasons'] else ''}'>"
                        f"{html.escape(verdict)}</td></tr>")
        parts.append(f"<table><tr>{header}</tr>{''.join(rows)}</table>")
        if runs[0].get("knee") is not None or runs[0].get("slo"):
            parts.append(f"<p>knee (highest concurrency within the SLOs {html.escape(json.dumps(runs[0]['slo']))}): "
                         f"{runs[0].get('knee')}</p>")
        parts += [_plot(f"{service}: throughput", runs, ("output_throughput", "request_throughput")),
                  _plot(f"{service}: latency percentiles", runs, ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
                                                                  "p99_tpot_ms", "p99_e2el_ms")),
                  _versus(f"{service}: this run against the baseline", runs)]
    parts.append("<h2>Context</h2><pre>" + html.escape(json.dumps(record.get("context", {}), indent=2)) + "</pre>")
    return "\n".join(p for p in parts if p) + "</body></html>\n"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _plot(title: str, runs: list[dict], metrics: tuple[str, ...]) -> str:
    present = [m for m in metrics if any(isinstance(r["metrics"].get(m), int | float) for r in runs)]
    if not present:
        return ""

    def draw(axes):
        for metric in present:
            points = [(r["concurrency"], r["metrics"][metric]) for r in runs
                      if isinstance(r["metrics"].get(metric), int | float)]
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=metric)
        axes.set_xlabel("concurrency")
        axes.set_title(title)
        axes.legend(fontsize="small")
    return f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{_figure_png(draw)}'></figure>"


def _versus(title: str, runs: list[dict]) -> str:
    pairs = [(r["concurrency"], metric, r["metrics"][metric], r["baseline"][metric]) for r in runs
             for metric in GATED if isinstance(r["metrics"].get(metric), int | float)
             and isinstance((r.get("baseline") or {}).get(metric), int | float)]
    if not pairs:
        return ""

    def draw(axes):
        labels = [f"{metric}\nc={conc}" for conc, metric, _, _ in pairs]
        positions = list(range(len(pairs)))
        ratio = [now / before if before else 0 for _, _, now, before in pairs]
        axes.bar(positions, ratio, color=["#4a8" if 0.9 <= r <= 1.1 else "#c64" for r in ratio])
        axes.axhline(1.0, color="black", linewidth=0.8)
        axes.set_xticks(positions, labels, fontsize="x-small")
        axes.set_ylabel("this run / baseline")
        axes.set_title(title)
    return f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{_figure_png(draw)}'></figure>"
