"""`vllm` in the rehearsal image: the CPU build of vLLM standing in for an accelerator's, on SIMULATED cards.

A rehearsal (inferfleet rehearse) runs the production plan, so `vllm serve` gets the production flags: tensor
parallelism over 4 cards, a 30000-token context, bfloat16. The sandbox's stand-in models are tiny and its vLLM runs
on the controller's CPUs; what those flags ask of real cards, it cannot give. This wrapper changes only what the
stand-in cannot take, says so on the container's log, and runs the real vLLM (vllm.real beside it). Any other
subcommand (bench, --version) passes through unchanged.

It runs inside the image (/opt/vllm/bin/python): standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REAL = Path(__file__).with_name("vllm.real")
# Ceilings for the CPU stand-in: tokens in one scheduler step, and the dtype the sandbox's models are made in
MAX_BATCHED_TOKENS = 4096
DTYPE = "float32"
PARALLEL_FLAGS = ("--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp", "--data-parallel-size", "-dp")


def _model_limit(model: str | None) -> int | None:
    """The stand-in model's context length, as vLLM derives it: the least of config.json's
    max_position_embeddings, a sentence-transformers model's max_seq_length and the tokenizer's model_max_length."""
    if not model:
        return None
    found = []
    for name, key in (("config.json", "max_position_embeddings"), ("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length")):
        try:
            value = json.loads((Path(model) / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and 0 < value < 10**8:  # tokenizers write a huge number for "no limit"
            found.append(value)
    return min(found) if found else None


def rewrite(args: list[str]) -> tuple[list[str], list[str]]:
    """`vllm serve` arguments the CPU stand-in can run, and a note per change (`FLAG: PROD -> REHEARSAL`)."""
    if not args or args[0] != "serve":
        return list(args), []
    out, notes = list(args), []
    model = out[1] if len(out) > 1 and not out[1].startswith("-") else None

    def value_of(flag: str) -> int | None:
        return out.index(flag) + 1 if flag in out and out.index(flag) + 1 < len(out) else None

    if model is None and value_of("--model"):
        model = out[value_of("--model")]
    for flag in PARALLEL_FLAGS:
        at = value_of(flag)
        if at and out[at] != "1":
            notes.append(f"{flag}: {out[at]} -> 1")
            out[at] = "1"
    limit = _model_limit(model)
    at = value_of("--max-model-len")
    max_len = None
    if at:
        max_len = int(out[at])
        if limit and max_len > limit:
            notes.append(f"--max-model-len: {max_len} -> {limit} (the stand-in model's context)")
            out[at] = str(limit)
            max_len = limit
    at = value_of("--max-num-batched-tokens")
    if at:
        wanted = max(min(int(out[at]), MAX_BATCHED_TOKENS), max_len or 0)
        if wanted != int(out[at]):
            notes.append(f"--max-num-batched-tokens: {out[at]} -> {wanted}")
            out[at] = str(wanted)
    at = value_of("--dtype")
    if at and out[at] != DTYPE:
        notes.append(f"--dtype: {out[at]} -> {DTYPE} (the stand-in model's dtype)")
        out[at] = DTYPE
    elif not at:
        out += ["--dtype", DTYPE]
        notes.append(f"--dtype: (model's) -> {DTYPE}")
    if "--enforce-eager" not in out:
        out.append("--enforce-eager")
        notes.append("--enforce-eager: added (no graph compilation on the stand-in)")
    return out, notes


def main() -> None:
    args, notes = rewrite(sys.argv[1:])
    if notes:
        print("inferfleet rehearsal (SIMULATED cards, vLLM CPU stand-in): changed for the stand-in: "
              + "; ".join(notes), file=sys.stderr, flush=True)
    os.execv(str(REAL), [str(REAL), *args])


if __name__ == "__main__":
    main()
