"""Llama configurations at several sizes (SmolLM2 and Llama-3.2 shapes), built with random weights."""

from __future__ import annotations

from typing import Any

#: Llama-style shapes; the parameter counts are those of the built model (tied embeddings counted once)
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=688, vocab_size=8192, tie_word_embeddings=True),
    "135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
    "360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                 intermediate_size=2560, vocab_size=49152, tie_word_embeddings=True),
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
    "3b": dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
}


def llama_config(size: str) -> Any:
    """The ``LlamaConfig`` of ``size`` (a key of :data:`SIZES`)."""
    from transformers import LlamaConfig

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    return LlamaConfig(**SIZES[size], max_position_embeddings=8192, rms_norm_eps=1e-5, bos_token_id=0,
                       eos_token_id=0, pad_token_id=0)


def build_model(size: str, *, dtype: str = "float32", device: str = "cpu", seed: int = 0) -> Any:
    """A ``LlamaForCausalLM`` of ``size`` with random weights (the library's own initialisation), in eval mode,
    created directly in ``dtype`` on ``device``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = LlamaForCausalLM(llama_config(size))
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def parameter_count(model: Any) -> int:
    """Distinct parameters of ``model`` (a tied embedding counted once)."""
    return sum(p.numel() for p in model.parameters())
