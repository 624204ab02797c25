"""Tiny random-weight models of the supported families and a character-level tokenizer, all built offline.

They serve the tests (:mod:`lmshrink.testing` re-exports them), plugin authors' adapter tests, and the problem
library's ``nemotron-h-nano`` source (:mod:`lmshrink.library.build`).
"""

from __future__ import annotations

import string
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .compat import transformers_lacks

#: the block pattern of NVIDIA-Nemotron-3-Nano-30B-A3B: 23 Mamba2 (M), 23 MoE (E), 6 attention (*) blocks
NEMOTRON_3_NANO_PATTERN = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"

#: config fields every tiny model shares: weights large enough that every block changes the logits, and the
#: special token ids of :func:`tiny_tokenizer`
_TINY = dict(initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _tiny(config_class: str, model_class: str, seed: int, **config: Any) -> Any:
    """``model_class(config_class(**config))`` from transformers, seeded, in eval mode."""
    config_obj = getattr(transformers, config_class)(**_TINY, **config)
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config_obj).eval()


def tiny_llama(*, layers: int = 4, hidden: int = 32, vocab: int = 128, tie: bool = True, seed: int = 0) -> Any:
    """A random Llama (SmolLM2-shaped: GQA, tied embeddings) small enough for unit tests."""
    return _tiny(
        "LlamaConfig", "LlamaForCausalLM", seed, vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tie,
    )


def tiny_qwen3(*, layers: int = 4, hidden: int = 32, vocab: int = 128, seed: int = 0) -> Any:
    """A random Qwen3 (q/k norms, explicit head_dim, per-layer ``layer_types``) small enough for unit tests."""
    return _tiny(
        "Qwen3Config", "Qwen3ForCausalLM", seed, vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, tie_word_embeddings=False,
    )


def tiny_nemotron_h(pattern: str = "M*EM-E*M", *, hidden: int = 16, vocab: int = 128, seed: int = 0) -> Any:
    """A random Nemotron-H with the block ``pattern`` (M Mamba2, E MoE, * attention, - MLP), fast on a CPU.

    With :data:`NEMOTRON_3_NANO_PATTERN` it has the 52-block layout of Nemotron-3-Nano-30B-A3B; a forward pass
    over a (4, 32) batch takes a few tens of milliseconds.
    """
    reason = transformers_lacks("nemotron_h")
    if reason:
        raise ImportError(reason)
    return _tiny(
        "NemotronHConfig", "NemotronHForCausalLM", seed, vocab_size=vocab, hidden_size=hidden,
        hybrid_override_pattern=pattern, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        intermediate_size=2 * hidden, mamba_num_heads=2, mamba_head_dim=8, n_groups=1, ssm_state_size=8,
        conv_kernel=4, chunk_size=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden,
        moe_shared_expert_intermediate_size=hidden, max_position_embeddings=256,
    )


def tiny_gpt2(*, layers: int = 4, hidden: int = 32, vocab: int = 128, seed: int = 0) -> Any:
    """A random GPT-2 (blocks at ``transformer.h``) for tests of adapter plugins; no built-in adapter supports it."""
    return _tiny("GPT2Config", "GPT2LMHeadModel", seed, vocab_size=vocab, n_positions=128, n_embd=hidden,
                 n_layer=layers, n_head=4)


def tiny_gpt_neox(*, layers: int = 4, hidden: int = 32, vocab: int = 128, seed: int = 0) -> Any:
    """A random GPT-NeoX (Pythia-shaped, layers at ``gpt_neox.layers``) for tests of adapter plugins; no built-in
    adapter supports it."""
    return _tiny(
        "GPTNeoXConfig", "GPTNeoXForCausalLM", seed, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=128,
    )


def tiny_tokenizer() -> Any:
    """A character-level fast tokenizer (100 tokens: ``<unk>``, ``<s>``, ``</s>`` and printable ASCII) built
    offline, for models with a vocabulary of at least 100."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in string.printable:
        if c not in "\x0b\x0c\r":
            vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>"
    )


__all__ = [
    "NEMOTRON_3_NANO_PATTERN",
    "tiny_gpt2",
    "tiny_gpt_neox",
    "tiny_llama",
    "tiny_nemotron_h",
    "tiny_qwen3",
    "tiny_tokenizer",
]
