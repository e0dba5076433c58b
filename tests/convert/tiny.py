"""A tiny random Llama with a SentencePiece tokenizer trained on the spot, and PEFT adapters."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

VOCAB = 512
SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ra", "to", "vi", "po", "de", "ja", "wu", "zo", "qe"]


def _phrases() -> list[str]:
    rng = random.Random(1)
    return [
        " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(6)) + "."
        for _ in range(24)
    ]


PHRASES = _phrases()


def cycle_text(start: int, count: int) -> str:
    """``count`` phrases in their fixed cyclic order from ``start``: text the model knows."""
    return " ".join(PHRASES[(start + i) % len(PHRASES)] for i in range(count))


def _corpus(path: Path) -> None:
    # Phrases always follow each other in the same order, so a briefly trained model predicts
    # most tokens with confidence, as a real fine-tuned model does on its own kind of text.
    rng = random.Random(2)
    lines = [cycle_text(rng.randrange(len(PHRASES)), 6) for _ in range(1500)]
    path.write_text("\n".join(lines) + "\n")


def _train(model: Any, tokenizer_model: Path, corpus: Path, steps: int = 150) -> None:
    import sentencepiece as spm
    import torch

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    ids: list[int] = []
    for line in corpus.read_text().splitlines():
        ids += [1, *sp.encode(line)]
    data = torch.tensor(ids)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 65, (16,), generator=gen)
        batch = torch.stack([data[s : s + 64] for s in starts])
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def llama_config(**overrides: Any) -> Any:
    """GQA (4 query heads, 2 KV heads), hidden 256, two layers."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def build_model(directory: Path, seed: int = 0, *, train: bool = True, **overrides: Any) -> Path:
    """Save a tiny Llama (fp32 safetensors), briefly trained, with its SentencePiece tokenizer."""
    import sentencepiece as spm
    import torch
    from transformers import LlamaForCausalLM, LlamaTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    _corpus(corpus)
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=VOCAB,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    (directory / "tokenizer.vocab").unlink()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(**overrides)).float()
    if train:
        _train(model, directory / "tokenizer.model", corpus)
    corpus.unlink()
    model.save_pretrained(directory, safe_serialization=True)
    tok = LlamaTokenizer(vocab_file=str(directory / "tokenizer.model"), legacy=True)
    tok.save_pretrained(directory)
    return directory


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name -> LoraConfig keyword arguments. init_lora_weights=False: PEFT's default init makes B
# zero, so the update would be zero and every check would pass trivially.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": dict(r=8, lora_alpha=16, target_modules=TARGETS),
    "rslora": dict(r=8, lora_alpha=16, target_modules=TARGETS, use_rslora=True),
    "patterns": dict(
        r=8,
        lora_alpha=16,
        target_modules=TARGETS,
        rank_pattern={"q_proj": 4, "model.layers.1.mlp.down_proj": 2},
        alpha_pattern={"k_proj": 64, "o_proj": 3},
    ),
    "dora": dict(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "up_proj"], use_dora=True
    ),
    "embed": dict(r=8, lora_alpha=16, target_modules=["embed_tokens", "q_proj"]),
    "gqa_k": dict(r=8, lora_alpha=16, target_modules=["k_proj"]),
    "saved": dict(r=8, lora_alpha=16, target_modules=["q_proj"], modules_to_save=["lm_head"]),
}


def build_adapter(
    model_dir: Path,
    out: Path,
    variant: str,
    seed: int = 1,
    *,
    safe: bool = True,
    strength: float = 1.0,
    **extra: Any,
) -> Path:
    """Save a random PEFT adapter of ``variant`` for the model in ``model_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(init_lora_weights=False, **{**VARIANTS[variant], **extra})
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        # PEFT's random init for DoRA leaves the magnitudes equal to the base norms; move
        # them so the rescale is exercised, and make updates large enough to matter.
        for name, p in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
            elif "lora_" in name:
                p.mul_(strength)
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)  # a fully trained copy differs from base
    peft_model.save_pretrained(out, safe_serialization=safe)
    return out


def merged_reference(model_dir: Path, adapter_dir: Path) -> Any:
    """PEFT's own merge_and_unload() of the adapter, as the oracle."""
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().eval()
