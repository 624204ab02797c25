"""Scale benchmark: time per token and peak memory of each lmshrink stage on random-weight Llama models."""
