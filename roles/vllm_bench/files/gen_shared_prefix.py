"""The shared-prefix dataset of seed 002 (its gen_random_dataset.py): groups of prompts that share a random prefix of
exactly `prefix_len` tokens of the served model's tokenizer, each with its own random suffix of `suffix_len` tokens,
shuffled, one {"prompt": ...} per line (vllm bench serve --dataset-name custom). Run inside the service's image,
which has the tokenizer's library: python3 gen_shared_prefix.py --tokenizer DIR --output FILE [...]."""

import argparse
import json
import random
import string


def random_string(rng, length):
    return "".join(rng.choices(string.ascii_letters + string.digits, k=length))


def random_tokens(tokenizer, rng, count):
    """Random text that the tokenizer reads back as `count` tokens (seed 002's gen_random_tokens)."""
    ids = []
    while len(ids) < count:
        ids.extend(tokenizer.encode(" " + random_string(rng, rng.randint(3, 8)), add_special_tokens=False))
    return tokenizer.decode(ids[:count])


def shared_prefix_prompts(tokenizer, groups, per_group, prefix_len, suffix_len, seed=42):
    rng = random.Random(seed)
    prompts = []
    for _group in range(groups):
        prefix = random_tokens(tokenizer, rng, prefix_len)
        for _member in range(per_group):
            prompts.append(prefix + " " + random_tokens(tokenizer, rng, suffix_len))
    rng.shuffle(prompts)
    return prompts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--per-group", type=int, default=100)
    parser.add_argument("--prefix-len", type=int, default=12 * 1024)
    parser.add_argument("--suffix-len", type=int, default=12 * 1024)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, trust_remote_code=True)
    prompts = shared_prefix_prompts(tokenizer, args.groups, args.per_group, args.prefix_len, args.suffix_len,
                                    args.seed)
    with open(args.output + ".tmp", "w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps({"prompt": prompt}, ensure_ascii=False) + "\n")
    import os

    os.replace(args.output + ".tmp", args.output)
    print(f"{len(prompts)} prompts in {args.groups} groups sharing {args.prefix_len}-token prefixes: {args.output}")


if __name__ == "__main__":
    main()
