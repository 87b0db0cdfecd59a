"""Closed-form model arithmetic shared by the planner and the trainer (for MFU).

Counts match `finegpt_pipeline.model.GPT` exactly; tests hold them to it.
"""

from __future__ import annotations


def param_count(n_layer: int, n_embd: int, vocab_size: int, block_size: int, bias: bool) -> int:
    """All parameters, tied token embedding / output layer counted once (as GPT.get_num_params())."""
    d = n_embd
    # attn c_attn 3d^2 + c_proj d^2, mlp c_fc 4d^2 + c_proj 4d^2; two LayerNorms (weight [+ bias])
    per_layer = 12 * d * d + (13 * d if bias else 2 * d)
    final_ln = 2 * d if bias else d
    return vocab_size * d + block_size * d + n_layer * per_layer + final_ln


def flops_per_token(n_layer: int, n_embd: int, vocab_size: int, block_size: int, bias: bool) -> float:
    """Training FLOPs per token, forward + backward: 6·N for the matmuls plus 12·L·d·T for
    attention scores and values (PaLM appendix B; the convention nanoGPT's MFU uses), where N
    excludes position embeddings (a lookup, no matmul) but keeps the token embedding, which
    is the output layer's weight."""
    n = param_count(n_layer, n_embd, vocab_size, block_size, bias) - block_size * n_embd
    return 6.0 * n + 12.0 * n_layer * n_embd * block_size
