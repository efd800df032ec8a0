"""The bench stage's pieces: the client's command for each kind of service (seed 002's commands), the decisions
(knee, regression gate, baseline), the report, the shared-prefix dataset and the parser of the client's printed
summary on recorded real outputs (tests/fixtures/bench/NOTES.md names each source)."""

import importlib.util
import json

import pytest
from helpers import FIXTURES, ROOT

from inferfleet import bench

SETTINGS = {"dataset": "random", "input_len": 512, "output_len": 256, "num_prompts": 3000, "extra_args": []}


def instance(task="generate", **extra):
    return {"task": task, "port": 8080, "served_model_name": "qwen25-7b",
            "model": "/workspace/models/Qwen2.5-7B-Instruct", **extra}


def test_the_client_runs_seed_002s_commands():
    # seed 002: vllm bench serve --base-url=http://${SERVER_IP}:8080 --dataset-name=random --random-input-len=512
    # --random-output-len=256 --max-concurrency=8 --num-prompts=3000 --model=/workspace/models/Qwen2.5-7B-Instruct
    argv = bench.client_argv(instance(), SETTINGS, 8, None, "r.json")
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert argv[:3] == ["vllm", "bench", "serve"]
    for flag, value in (("--base-url", "http://127.0.0.1:8080"), ("--dataset-name", "random"),
                        ("--random-input-len", "512"), ("--random-output-len", "256"), ("--max-concurrency", "8"),
                        ("--num-prompts", "3000"), ("--model", "/workspace/models/Qwen2.5-7B-Instruct")):
        assert argv[argv.index(flag) + 1] == value, flag
    assert "--save-result" in argv and argv[argv.index("--result-filename") + 1] == "r.json" and pairs
    # seed 002's second run: --dataset-name=custom --dataset-path=${DATASET_PATH} --custom-output-len=256
    custom = bench.client_argv(instance(), dict(SETTINGS, dataset="shared_prefix"), 8, "/bench/data/x.jsonl", "r")
    assert custom[custom.index("--dataset-name") + 1] == "custom"
    assert custom[custom.index("--dataset-path") + 1] == "/bench/data/x.jsonl"
    assert custom[custom.index("--custom-output-len") + 1] == "256"
    embed = bench.client_argv(instance("embed"), SETTINGS, 4, None, "r")
    assert embed[embed.index("--backend") + 1] == "openai-embeddings" and "/v1/embeddings" in embed
    assert "--ignore-eos" not in embed
    rerank = bench.client_argv(instance("rerank"), SETTINGS, 4, None, "r")
    assert rerank[rerank.index("--backend") + 1] == "vllm-rerank"
    assert rerank[rerank.index("--dataset-name") + 1] == "random-rerank"


def runs_of(*points):
    return [{"concurrency": c, "metrics": {"p99_ttft_ms": ttft, "p99_tpot_ms": tpot}} for c, ttft, tpot in points]


def test_the_knee_is_the_highest_concurrency_within_the_slos():
    runs = runs_of((1, 100, 20), (2, 150, 25), (4, 400, 40), (8, 2500, 90))
    assert bench.knee(runs, {"p99_ttft_ms": 500}) == 4
    assert bench.knee(runs, {"p99_ttft_ms": 500, "p99_tpot_ms": 30}) == 2
    assert bench.knee(runs, {"p99_ttft_ms": 50}) is None
    assert bench.knee(runs, {}) is None


def test_the_gate_names_metric_baseline_now_and_band():
    base = {"output_throughput": 1000.0, "p99_ttft_ms": 200.0, "p99_tpot_ms": 50.0}
    tolerance = {"output_throughput": 0.10, "p99_ttft_ms": 0.25, "p99_tpot_ms": 0.25}
    assert bench.gate(dict(base, output_throughput=950.0), base, tolerance) == []
    reasons = bench.gate({"output_throughput": 800.0, "p99_ttft_ms": 260.0, "p99_tpot_ms": 51.0}, base, tolerance)
    assert reasons == ["output throughput (tok/s) fell to 800.00 from 1000.00; allowed down to 900.00 (10%)",
                       "p99 TTFT (ms) rose to 260.00 from 200.00; allowed up to 250.00 (25%)"]
    assert bench.gate(base, None, tolerance) == []
    assert bench.gate({"output_throughput": None}, base, tolerance) == []  # a pooling run: nothing to compare


def test_the_previous_baseline_skips_failed_runs_unless_accepted(tmp_path):
    def record(run, metrics, reasons=(), accepted=False):
        path = tmp_path / "bench" / run / "record.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"run": run, "accepted": accepted, "runs": {
            "h/s/random/c2": {"metrics": metrics, "reasons": list(reasons)}}}))
    record("20260101T000000Z-bench-a", {"output_throughput": 100.0})
    record("20260102T000000Z-bench-b", {"output_throughput": 10.0}, ["fell"])
    figures, where = bench.baseline_figures(tmp_path, "previous", "20260103T000000Z-bench-c")
    assert figures["h/s/random/c2"]["output_throughput"] == 100.0 and where == "previous runs"
    record("20260103T000000Z-bench-c", {"output_throughput": 12.0}, ["fell"], accepted=True)
    figures, _ = bench.baseline_figures(tmp_path, "previous", "20260104T000000Z-bench-d")
    assert figures["h/s/random/c2"]["output_throughput"] == 12.0
    assert bench.baseline_figures(tmp_path, "none", "x") == ({}, "none")
    (tmp_path / "base.json").write_text(json.dumps({"runs": {"k": {"metrics": {"output_throughput": 5}}}}))
    assert bench.baseline_figures(tmp_path, str(tmp_path / "base.json"), "x")[0] == {"k": {"output_throughput": 5}}


def test_a_run_is_unchanged_only_with_the_same_client_command_and_serving_container(tmp_path):
    mark = bench.fingerprint(instance(), SETTINGS, 8, None, "c0ffee")
    assert mark == bench.fingerprint(instance(), SETTINGS, 8, None, "c0ffee")
    # another container (serve recreated it), another load, another concurrency, or none serving: measured again
    assert mark != bench.fingerprint(instance(), SETTINGS, 8, None, "beef")
    assert mark != bench.fingerprint(instance(), dict(SETTINGS, num_prompts=100), 8, None, "c0ffee")
    assert mark != bench.fingerprint(instance(), SETTINGS, 16, None, "c0ffee")
    assert bench.fingerprint(instance(), SETTINGS, 8, None, None) is None

    def record(run, entry):
        path = tmp_path / "bench" / run / "record.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"run": run, "runs": {"h/s/random/c8": entry}}))
    record("20260101T000000Z-up-a", {"metrics": {"output_throughput": 9.0}, "reasons": [], "fingerprint": mark})
    record("20260102T000000Z-up-b", {"metrics": {"output_throughput": 10.0}, "reasons": [], "fingerprint": mark})
    latest = bench.last_measurements(tmp_path, "20260103T000000Z-up-c")["h/s/random/c8"]
    assert latest["run"] == "20260102T000000Z-up-b" and latest["metrics"]["output_throughput"] == 10.0
    assert bench.unchanged_since(latest, mark) is latest
    assert bench.unchanged_since(latest, "other") is None and bench.unchanged_since(latest, None) is None
    assert bench.unchanged_since(None, mark) is None
    # the last measurement failed its gate: measured again, so that a fix shows
    record("20260103T000000Z-up-c", {"metrics": {"output_throughput": 1.0}, "reasons": ["fell"], "fingerprint": mark})
    assert bench.unchanged_since(bench.last_measurements(tmp_path, "20260104T000000Z-up-d")["h/s/random/c8"],
                                 mark) is None
    # a run sees only earlier runs
    assert bench.last_measurements(tmp_path, "20260101T000000Z-up-a") == {}


def test_the_report_has_a_table_and_plots_per_service():
    runs = {}
    for concurrency, throughput in ((1, 100.0), (2, 180.0), (4, 200.0)):
        runs[f"h/tiny/random/c{concurrency}"] = {
            "host": "h", "service": "tiny", "dataset": "random", "concurrency": concurrency, "knee": 2,
            "slo": {"p99_ttft_ms": 500}, "reasons": [] if concurrency < 4 else ["p99 TTFT (ms) rose"],
            "metrics": {"output_throughput": throughput, "request_throughput": throughput / 16, "p99_ttft_ms": 90.0,
                        "median_ttft_ms": 50.0, "p99_tpot_ms": 12.0, "completed": 20},
            "baseline": {"output_throughput": 190.0, "p99_ttft_ms": 80.0, "p99_tpot_ms": 11.0}}
    page = bench.render_report({"run": "r1", "status": "fail", "baseline": "previous runs", "simulated": True,
                                "runs": runs, "context": {"h": {"plan_hash": "abc"}}})
    assert page.count("<img ") == 3 and page.count("data:image/png;base64,") == 3
    assert "SIMULATED" in page and "p99 TTFT (ms) rose" in page and "knee" in page and "abc" in page


def test_the_shared_prefix_dataset_shares_its_prefixes():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "roles" / "vllm_bench" / "files" /
                                                  "gen_shared_prefix.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)

    class WordTokenizer:  # one token per word, as simple as a tokenizer gets
        def encode(self, text, add_special_tokens=False):
            return text.split()

        def decode(self, ids):
            return " ".join(ids)

    prompts = gen.shared_prefix_prompts(WordTokenizer(), groups=3, per_group=4, prefix_len=10, suffix_len=5, seed=1)
    assert len(prompts) == 12 and all(len(p.split()) == 15 for p in prompts)
    prefixes = {" ".join(p.split()[:10]) for p in prompts}
    assert len(prefixes) == 3
    assert sorted(sum(1 for p in prompts if p.startswith(prefix)) for prefix in prefixes) == [4, 4, 4]
    assert gen.shared_prefix_prompts(WordTokenizer(), 3, 4, 10, 5, seed=1) == prompts  # seeded


def test_the_printed_summary_recorded_figures():
    modern = bench.parse_summary((FIXTURES / "bench" / "vllm-bench-serve-main2026-03-pr36795-sharegpt-c16.txt")
                                 .read_text())
    assert modern == {
        "completed": 960, "failed": 0, "max_concurrency": 16, "duration": 191.31, "total_input_tokens": 219140,
        "total_output_tokens": 288000, "request_throughput": 5.02, "output_throughput": 1505.38,
        "max_output_tokens_per_s": 1712.0, "max_concurrent_requests": 32.0, "total_token_throughput": 2650.83,
        "mean_ttft_ms": 236.09, "median_ttft_ms": 236.95, "p99_ttft_ms": 380.3, "mean_tpot_ms": 9.87,
        "median_tpot_ms": 9.83, "p99_tpot_ms": 10.49, "mean_itl_ms": 9.87, "median_itl_ms": 9.81, "p99_itl_ms": 10.99}
    pooling = bench.parse_summary((FIXTURES / "bench" / "vllm-bench-serve-unknown-ttpr1970-embeddings-e2el.txt")
                                  .read_text())
    assert pooling["p99_e2el_ms"] == 3588.07 and "output_throughput" not in pooling
    old = bench.parse_summary((FIXTURES / "bench" / "vllm-bench-serve-main2024-10-issue9722-random-c10.txt")
                              .read_text())
    assert old["total_token_throughput"] == 4934.95 and old["p99_itl_ms"] == 87.79  # "Total Token throughput"


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "bench").glob("*.txt")))
def test_the_printed_summary_reads_as_the_json_result(name):
    parsed = bench.parse_summary((FIXTURES / "bench" / name).read_text())
    assert parsed["completed"] > 0 and parsed["request_throughput"] > 0
    if "p99_ttft_ms" in parsed:
        assert parsed["median_ttft_ms"] <= parsed["p99_ttft_ms"]


def test_bench_list_and_show_read_the_recorded_runs(tmp_path, monkeypatch, capsys):
    from inferfleet import cli

    monkeypatch.setenv("INFERFLEET_RESULTS_DIR", str(tmp_path))
    assert cli.main(["bench", "list"]) == 0 and "no bench runs yet" in capsys.readouterr().out
    run = tmp_path / "bench" / "20261202T100000Z-bench-abc123"
    run.mkdir(parents=True)
    (run / "record.json").write_text(json.dumps({"run": run.name, "status": "fail", "baseline": "previous runs",
                                                 "runs": {"h/tiny/random/c2": {
                                                     "host": "h", "service": "tiny", "dataset": "random",
                                                     "concurrency": 2, "reasons": ["p99 TTFT (ms) rose"],
                                                     "metrics": {"output_throughput": 99.5}}}}))
    (run / "report.html").write_text("<html></html>")
    assert cli.main(["bench", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["status"], r["services"]) for r in listed] == [(run.name, "fail", ["tiny"])]
    assert cli.main(["bench", "show", "latest"]) == 0
    shown = capsys.readouterr().out
    assert "99.50" in shown and "p99 TTFT (ms) rose" in shown and str(run / "report.html") in shown
    assert cli.main(["bench", "show", "nope"]) == 2
