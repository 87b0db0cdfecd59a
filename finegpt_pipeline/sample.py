"""`finegpt sample`: generate text from a trained checkpoint (ours or any nanoGPT `ckpt.pt`)."""

from __future__ import annotations


import torch

from finegpt_pipeline import checkpoint
from finegpt_pipeline.config import EOT_TOKEN


def generate(ckpt_path: str, prompt: str = "", max_new_tokens: int = 100, temperature: float = 0.8,
             top_k: int | None = 200, num_samples: int = 1, seed: int = 1337,
             device: str = "cpu") -> list[str]:
    from finegpt_pipeline.tokenizer import decode, get_encoding

    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0 (got {temperature})")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be >= 1 (got {top_k})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = checkpoint.model_from_checkpoint(checkpoint.load(ckpt_path), device)
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
    p.add_argument("--ckpt", required=True, help="checkpoint file (RUN_DIR/ckpt.pt)")
    p.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest; 0 = all")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.set_defaults(func=_cli_sample)


def _cli_sample(args) -> int:
    texts = generate(args.ckpt, args.prompt, args.max_new_tokens, args.temperature,
                     args.top_k or None, args.num_samples, args.seed, args.device)
    for i, text in enumerate(texts):
        if i:
            print("\n---------------")
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m finegpt_pipeline.sample ...`: this subcommand alone."""
    from finegpt_pipeline.cli import run_stage

    return run_stage(add_cli, "sample", argv)


if __name__ == "__main__":
    raise SystemExit(main())
