"""GPT-2 architecture, state-dict compatible with GPT-2 and nanoGPT checkpoints.

Learned position embeddings, pre-LayerNorm blocks, GELU MLP, tied input/output embeddings,
optional biases, causal attention through `scaled_dot_product_attention` (flash kernels on GPU).
Parameter names follow GPT-2 (`transformer.wte`, `transformer.h.N.attn.c_attn`, `lm_head`, ...).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (torch's `bias=` arrived only in 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections: std / sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = False) -> int:
        """All parameters, tied embeddings counted once; `non_embedding` drops position embeddings
        (nanoGPT's convention: token embeddings stay, since they are the output layer too)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None):
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            # generation needs only the last position: skip the wide output matmul elsewhere
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizer(self, weight_decay, learning_rate, betas, device_type,
                            optimizer="adamw", matrix_lr=None):
        """AdamW with decay on 2-D weights only (matmuls, embeddings); fused kernel on CUDA.
        `optimizer="muon"` gives the blocks' 2-D matrices to Muon at `matrix_lr` (torch >= 2.9;
        AdamW where torch lacks it), the embeddings (tied with lm_head) and gains to AdamW at
        `learning_rate`. Each group keeps `lr_scale`, its lr over `learning_rate`, for the
        schedule. Returns one optimizer, or a `MultiOptimizer` of two."""
        matrix_lr = learning_rate if matrix_lr is None else matrix_lr
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        embed = [p for n, p in named if p.dim() >= 2 and not n.startswith("transformer.h.")]
        matrices = [p for n, p in named if p.dim() >= 2 and n.startswith("transformer.h.")]
        gains = [p for n, p in named if p.dim() < 2]

        def group(params, lr, decay):
            return {"params": params, "weight_decay": decay, "lr": lr,
                    "lr_scale": lr / learning_rate if learning_rate else 1.0}

        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        muon = getattr(torch.optim, "Muon", None) if optimizer == "muon" else None
        adam_groups = [group(embed, learning_rate, weight_decay), group(gains, learning_rate, 0.0)]
        if muon is None:
            adam_groups.insert(1, group(matrices, matrix_lr, weight_decay))
            return torch.optim.AdamW(adam_groups, lr=learning_rate, betas=betas, **extra)
        return MultiOptimizer([
            torch.optim.AdamW(adam_groups, lr=learning_rate, betas=betas, **extra),
            muon([group(matrices, matrix_lr, weight_decay)], lr=matrix_lr,
                 adjust_lr_fn="match_rms_adamw"),
        ])

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None):
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]
            logits, _ = self(context)
            logits = logits[:, -1, :] / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx = torch.cat((idx, torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)), dim=1)
        return idx


class MultiOptimizer:
    """Several optimizers stepped as one (param_groups, step, zero_grad, state_dict), so the
    trainer, GradScaler and checkpoints handle Muon + AdamW like a single optimizer."""

    def __init__(self, optimizers):
        self.optimizers = list(optimizers)
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]

    def step(self, closure=None):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict):
        saved = state_dict.get("optimizers")
        if saved is None or len(saved) != len(self.optimizers):
            raise ValueError("optimizer state does not match this optimizer (Muon + AdamW)")
        for opt, sd in zip(self.optimizers, saved):
            opt.load_state_dict(sd)
