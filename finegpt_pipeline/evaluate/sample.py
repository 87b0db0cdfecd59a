"""`finegpt sample`: generate text from a trained checkpoint (ours or any nanoGPT `ckpt.pt`),
or from a model object: a loaded `GPT`, e.g. a registered version's (`--model
models:/finegpt@champion`, loaded by `tracking.models.load_gpt`). All take the same path
(`sample`), so the same seed gives the same text; so does the registered model's
`mlflow.pyfunc` `predict` (`registered_model`)."""

from __future__ import annotations

from pathlib import Path

import torch

from finegpt_pipeline.train import checkpoint
from finegpt_pipeline.config import EOT_TOKEN


# (registry's own words; it imports this module's loader, so it is not imported here)
LOAD_HINT = ("versions are registered by trained_checkpoint or `finegpt eval --promote`, "
             "alias 'champion' by the champion check")


def _device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def generate(source: str | Path | torch.nn.Module, prompt: str = "", max_new_tokens: int = 100,
             temperature: float = 0.8, top_k: int | None = 200, num_samples: int = 1,
             seed: int = 1337, device: str = "cpu") -> list[str]:
    """Texts continuing `prompt` from `source`: a checkpoint path, or a model with the GPT's
    `generate(idx, max_new_tokens, temperature, top_k)` (moved to `device`, put in eval mode)."""
    _check(temperature, top_k)
    device = _device(device)
    if isinstance(source, torch.nn.Module):
        model = source.to(device)
    else:
        model = checkpoint.model_from_checkpoint(checkpoint.load(source), device)
    return sample(model, prompt, max_new_tokens, temperature, top_k, num_samples, seed, device)


def _check(temperature: float, top_k: int | None) -> None:
    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0 (got {temperature})")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be >= 1 (got {top_k})")


def sample(model: torch.nn.Module, prompt: str, max_new_tokens: int, temperature: float,
           top_k: int | None, num_samples: int, seed: int, device: str) -> list[str]:
    """The one sampling path: seed, encode, `model.generate`, decode."""
    from finegpt_pipeline.data.tokenizer import decode, get_encoding

    model.eval()
    torch.manual_seed(seed)
    # an empty prompt starts from the document separator, as training documents do
    ids = get_encoding().encode_ordinary(prompt) if prompt else [EOT_TOKEN]
    start = torch.tensor([ids], dtype=torch.long, device=device)
    texts = []
    for _ in range(num_samples):
        out = model.generate(start, max_new_tokens, temperature=temperature, top_k=top_k)
        # ids beyond GPT-2's vocabulary (padding rows of the embedding) have no text
        texts.append(decode([t for t in out[0].tolist() if t < EOT_TOKEN]))
    return texts


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate text from a checkpoint")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint file (RUN_DIR/ckpt.pt)")
    source.add_argument("--model", help="registered model URI, e.g. models:/finegpt@champion "
                        "(from MLFLOW_TRACKING_URI, else the store under FINEGPT_HOME)")
    p.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest; 0 = all")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.set_defaults(func=_cli_sample)


def _cli_sample(args) -> int:
    source = args.ckpt
    if args.model:
        from finegpt_pipeline import paths
        from finegpt_pipeline.tracking import models

        source = models.load_gpt(paths.mlflow_tracking_uri(), args.model, _device(args.device),
                                 hint=LOAD_HINT)
    texts = generate(source, args.prompt, args.max_new_tokens, args.temperature,
                     args.top_k or None, args.num_samples, args.seed, args.device)
    for i, text in enumerate(texts):
        if i:
            print("\n---------------")
        print(text)
    return 0
