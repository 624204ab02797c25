"""Tiny random models, a tiny tokenizer and a text file for fast tests."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_text() -> str:
    """Real English text: a slice of CPython's documentation."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)[:40])


def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on CPython's documentation, wrapped for transformers."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([tiny_text()], vocab_size=vocab_size, min_frequency=2, special_tokens=["<eos>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<eos>", pad_token="<eos>")
    return tok


def tiny_llama(num_layers: int = 4, vocab_size: int = 320, seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=num_layers, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=256, eos_token_id=0,
               pad_token_id=0, bos_token_id=0)
    cfg.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    # random init is near-uniform; larger weights make layers matter, so gradients and removals are informative
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model.eval()


def tiny_llama_linears(windows: int, seq_len: int, num_layers: int, **shape):
    """A tiny Llama (vocabulary 128, ``shape`` its sizes), its decomposable linear layers and ``windows`` ×
    ``seq_len`` random token ids (seed 0): the setting of the SVD tests."""
    from lmshrink.adapters.llama import LlamaAdapter

    model = tiny_llama(num_layers=num_layers, vocab_size=128, **shape)
    linears = LlamaAdapter().linear_layers(model)
    ids = torch.randint(0, 128, (windows, seq_len), generator=torch.Generator().manual_seed(0))
    return model, linears, ids


def save_tiny_llama_dir(path: Path, num_layers: int = 6) -> Path:
    model = tiny_llama(num_layers)
    tok = tiny_tokenizer()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def needs_transformers(feature: str):
    """Skip mark for a test of a model or feature the installed transformers is too old for (lmshrink.compat)."""
    import pytest

    from lmshrink.compat import transformers_lacks

    reason = transformers_lacks(feature)
    return pytest.mark.skipif(reason is not None, reason=reason or "")
