"""The training configuration and the plan file: the contract between planner and trainer.

A plan file (`finegpt plan --json`, a run directory's plan.json) has a seam between what the
trainer runs and what the planner reported:

    {"plan_version": 2, "config": {...every TrainConfig field...}, "report": {...estimates...}}

The trainer reads `config` strictly (an unknown key is an error, so a typo in a hand-written
plan or a `--set` override fails before any training starts) and keeps `report` as it is.
`plan_parts` also reads the older shapes: a flat version-1 plan (config fields beside the
report keys in `V1_REPORT_KEYS`) and a hand-written flat config.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

GPT2_VOCAB_SIZE = 50257
EOT_TOKEN = 50256
TOKEN_BYTES = 2  # a GPT-2 id on disk (bins, token_ids): uint16


def padded_vocab_size(vocab_size: int = GPT2_VOCAB_SIZE, multiple: int = 64) -> int:
    """GPT-2's 50257 padded to 50304: a multiple of 64 keeps the output matmul on fast kernels."""
    return -(-vocab_size // multiple) * multiple


@dataclass
class TrainConfig:
    # model (exactly nanoGPT's GPTConfig fields)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    vocab_size: int = padded_vocab_size()
    dropout: float = 0.0
    bias: bool = False
    # batch: tokens per optimizer step = micro_batch * grad_accum * block_size; under torchrun
    # the grad_accum micro-steps are shared among the processes (as in nanoGPT)
    micro_batch: int = 16
    grad_accum: int = 1
    # schedule: linear warmup, then cosine decay to min_lr at lr_decay_iters, or (wsd) flat
    # until the last cooldown_frac of lr_decay_iters and linear down to min_lr there
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 10
    lr_decay_iters: int = 200
    lr_schedule: str = "cosine"  # cosine | wsd
    cooldown_frac: float = 0.2
    max_iters: int = 200
    weight_decay: float = 0.1
    # optimizer: adamw (every parameter), or muon for the blocks' matrices at matrix_lr (AdamW
    # for embeddings and gains at learning_rate; AdamW throughout where torch lacks Muon);
    # matrix_lr 0 means learning_rate, and the schedule scales every group alike
    optimizer: str = "adamw"  # adamw | muon
    matrix_lr: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # runtime
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    compile: str = "auto"  # auto (on for CUDA) | true | false
    eval_interval: int = 50
    eval_iters: int = 10
    log_interval: int = 10
    checkpoint_interval: int = 50
    seed: int = 1337
    peak_flops: float = 0.0  # device's peak dense FLOP/s for MFU; 0 = unknown

    @property
    def tokens_per_micro_step(self) -> int:
        return self.micro_batch * self.block_size

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step, the plan's (all processes together)."""
        return self.tokens_per_micro_step * self.grad_accum

    def model_args(self) -> dict[str, Any]:
        """nanoGPT's `model_args`: exactly its GPTConfig fields."""
        return {k: getattr(self, k) for k in MODEL_KEYS}

    def compiles_on(self, device_type: str) -> bool:
        """Whether the trainer torch.compiles on this device type ("cuda", "cpu"): auto means
        on CUDA only."""
        flag = str(self.compile).lower()
        return device_type == "cuda" if flag == "auto" else flag == "true"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        problems = []
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "micro_batch",
                     "grad_accum", "max_iters", "eval_iters", "log_interval"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.n_head >= 1 and self.n_embd % self.n_head:
            problems.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.vocab_size < GPT2_VOCAB_SIZE:
            problems.append(f"vocab_size ({self.vocab_size}) is below GPT-2's {GPT2_VOCAB_SIZE}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            problems.append(f"dtype must be auto|bfloat16|float16|float32 (got {self.dtype!r})")
        if str(self.compile).lower() not in ("auto", "true", "false"):
            problems.append(f"compile must be auto|true|false (got {self.compile!r})")
        if self.lr_schedule not in ("cosine", "wsd"):
            problems.append(f"lr_schedule must be cosine|wsd (got {self.lr_schedule!r})")
        if not 0.0 <= self.cooldown_frac <= 1.0:
            problems.append(f"cooldown_frac must be in [0, 1] (got {self.cooldown_frac})")
        if self.optimizer not in ("adamw", "muon"):
            problems.append(f"optimizer must be adamw|muon (got {self.optimizer!r})")
        if self.min_lr > self.learning_rate:
            problems.append(f"min_lr ({self.min_lr}) exceeds learning_rate ({self.learning_rate})")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config keys {unknown}; known: {sorted(known)}")
        cfg = cls(**{k: _coerce(cls, k, v) for k, v in data.items() if k in known})
        cfg.validate()
        return cfg

    @classmethod
    def from_plan(cls, plan: dict[str, Any], source: str = "plan") -> "TrainConfig":
        """The config of a plan in any shape `plan_parts` reads."""
        return cls.from_dict(plan_parts(plan, source)[0], source=source)

    def with_overrides(self, assignments: list[str]) -> "TrainConfig":
        """Apply `key=value` strings (the CLI's `--set`), typed by the field's type."""
        data = self.to_dict()
        for item in assignments:
            key, value = parse_assignment(item, data)
            data[key] = value
        return type(self).from_dict(data, source="--set")


def parse_assignment(item: str, known) -> tuple[str, str]:
    """One `--set key=value` string, split; the key must be one of `known`."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--set expects key=value, got {item!r}")
    if key not in known:
        raise ValueError(f"--set: unknown config key {key!r}; known: {sorted(known)}")
    return key, value


def read_plan(path: str | Path) -> dict[str, Any]:
    """A plan file's JSON object; each way a file can fail to be one is a one-line error."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: plan file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a plan file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a plan (binary, not UTF-8 JSON text); pass the JSON "
                         "that `finegpt plan --json` writes") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a plan must be a JSON object")
    return data


def _coerce(cls, key: str, value: Any) -> Any:
    """Type a value by the dataclass field's default; strings come from --set."""
    default = next(f.default for f in fields(cls) if f.name == key)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError(f"{key}: expected true/false, got {value!r}")
        return bool(value)
    try:
        if isinstance(default, int):
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a {type(default).__name__}, got {value!r}") from None
    return str(value)


MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "dropout", "bias")

PLAN_VERSION = 2

# A version-1 plan was flat: these keys sat beside the config fields (estimates, hardware,
# warnings, claims). Reading one moves them to the report; anything else unknown is an error.
V1_REPORT_KEYS = frozenset({
    "tokens_per_step", "params", "params_non_embedding", "flops_per_token", "total_flops",
    "peak_memory_bytes", "memory_budget_bytes", "memory_breakdown", "est_step_seconds",
    "est_hours", "est_tokens_per_second", "expected_mfu", "tokens_total", "tokens_available",
    "tokens_per_param", "epochs", "energy_kwh", "energy_cost", "price_per_kwh", "board_watts",
    "hardware", "gpu_name", "goal", "hours_budget", "preset", "provenance", "warnings",
    "measured", "calibration", "plan_version", "claims", "claim_verdicts", "bins_dir",
    "fixed_fields", "val_tokens", "recipe",
})


def make_plan_file(config: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """A plan in the current file shape."""
    return {"plan_version": PLAN_VERSION, "config": dict(config), "report": dict(report)}


def plan_parts(plan: dict[str, Any], source: str = "plan") -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, report) of a plan: version 2 as written; a flat version-1 plan or hand-written
    config split by `V1_REPORT_KEYS` (the config is checked by `TrainConfig.from_dict`)."""
    version = plan.get("plan_version", 1)
    if version == PLAN_VERSION:
        extra = sorted(set(plan) - {"plan_version", "config", "report"})
        if extra or not isinstance(plan.get("config"), dict) or not isinstance(plan.get("report", {}), dict):
            raise ValueError(f"{source}: a version-{PLAN_VERSION} plan holds 'config' and 'report' "
                             f"objects only (got keys {sorted(plan)}); write it as `finegpt plan --json` does")
        return dict(plan["config"]), dict(plan.get("report", {}))
    if version != 1:
        raise ValueError(f"{source}: unknown plan_version {version!r}; this trainer reads versions "
                         f"1 and {PLAN_VERSION}: re-plan with `finegpt plan --json`")
    if "config" in plan or "report" in plan:
        raise ValueError(f"{source}: 'config' and 'report' objects need \"plan_version\": "
                         f"{PLAN_VERSION} beside them (or write the config's fields flat)")
    config = {k: v for k, v in plan.items() if k not in V1_REPORT_KEYS}
    report = {k: v for k, v in plan.items() if k in V1_REPORT_KEYS and k != "plan_version"}
    return config, report
