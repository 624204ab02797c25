"""Healing by knowledge distillation: train the pruned model (LoRA adapters, merged afterwards, or chosen blocks in
full) to match the unpruned model's next-token distributions on calibration text.

The teacher's distribution at temperature τ is kept at its ``top_k`` most likely tokens per position, renormalised
(p̃), computed once before training (so the teacher need not stay in memory). The loss is the cross-entropy

    ℓ = −τ² · mean_positions Σ_{v ∈ top-k} p̃_v · log softmax(z_student / τ)_v                            (1)

which differs from KL(p̃ ‖ q_student) by the teacher's entropy, a constant; τ² keeps gradient sizes comparable
across temperatures (Hinton et al.). LoRA adapters come from peft (``target_modules="all-linear"``, the output head
excluded) and are merged into the weights before saving, so the healed model is a plain transformers model.

A factored model (``lmshrink svd``: low-rank and PivGa layers) stays factored: with ``lora``, each factor gets a
low-rank delta of its own (:mod:`.factored`), folded into it afterwards, beside peft's adapters on the dense linear
layers left; with ``full``, the factors are trained directly. Layer types, shapes and parameter counts do not change.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.errors import LmshrinkError, require
from ..core.options import option
from ..evaluate.loss import model_inputs
from .factored import add_factor_deltas, factored_layers, fold_factor_deltas

METHODS = ("lora", "full")


@dataclass
class KDConfig:
    """Settings of distillation (every field has a command-line twin: ``--heal-option KEY=VALUE``)."""

    steps: int = option(60, "KD healing: optimizer steps")
    lr: float = option(5e-4, "KD healing: peak AdamW learning rate (linear warm-up, then cosine decay to 10%)")
    temperature: float = option(1.0, "KD healing: distillation temperature τ of teacher and student")
    method: str = option("lora", "KD healing: lora (adapters merged afterwards) or full (every weight but the "
                                 "embeddings and the output head)")
    lora_rank: int = option(16, "KD healing: LoRA rank")
    lora_alpha: float = option(32.0, "KD healing: LoRA alpha")
    batch_size: int = option(4, "KD healing: calibration windows per step")
    top_k: int = option(256, "KD healing: most likely teacher tokens kept per position")
    warmup: float = option(0.1, "KD healing: fraction of the steps spent warming up the learning rate")
    weight_decay: float = option(0.0, "KD healing: AdamW weight decay")
    seed: int = option(0, "KD healing: seed of the window order and of the adapters")

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.steps, int) and self.steps >= 1, "steps must be a whole number ≥ 1"),
            (self.lr > 0, "lr must be positive"),
            (self.temperature > 0, "temperature must be positive"),
            (self.method in METHODS, f"method must be one of {list(METHODS)}"),
            (isinstance(self.lora_rank, int) and self.lora_rank >= 1, "lora_rank must be a whole number ≥ 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be a whole number ≥ 1"),
            (isinstance(self.top_k, int) and self.top_k >= 1, "top_k must be a whole number ≥ 1"),
            (0 <= self.warmup < 1, "warmup must be a fraction in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise LmshrinkError(f"KD healing: {message}.")

    @property
    def samples(self) -> int:
        """Calibration windows one pass over the schedule uses (each seen once)."""
        return self.steps * self.batch_size


@dataclass
class TeacherTargets:
    """The teacher's top-k next-token probabilities (renormalised) for each position of ``input_ids``."""

    input_ids: Any
    probs: Any  # (windows, seq_len − 1, k) float32
    indices: Any  # (windows, seq_len − 1, k) int64
    temperature: float


@dataclass
class KDReport:
    """What a distillation run did: the loss (1) per step and the settings."""

    config: KDConfig
    losses: list[float] = field(default_factory=list)
    trained_parameters: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        first = self.losses[: max(len(self.losses) // 10, 1)]
        last = self.losses[-max(len(self.losses) // 10, 1):]
        return {"config": asdict(self.config), "trained_parameters": self.trained_parameters,
                "loss_first": sum(first) / len(first) if first else None,
                "loss_last": sum(last) / len(last) if last else None, "losses": self.losses,
                "seconds": self.seconds}


def teacher_targets(teacher: Any, input_ids: Any, *, top_k: int = 256, temperature: float = 1.0,
                    batch_size: int = 8, progress: bool = False) -> TeacherTargets:
    """Run the (unpruned) teacher once over ``input_ids`` and keep its top-k distribution per position."""
    probs, indices = [], []
    teacher.eval()
    with torch.no_grad():
        for s in tqdm(range(0, input_ids.shape[0], batch_size), desc="teacher targets", disable=not progress,
                      leave=False):
            ids = model_inputs(teacher, input_ids[s : s + batch_size])
            logits = teacher(input_ids=ids, use_cache=False).logits[:, :-1].float()
            if not torch.isfinite(logits).all():
                raise LmshrinkError("The teacher model produced non-finite logits; it cannot guide distillation.")
            p = torch.softmax(logits / temperature, dim=-1)
            top = p.topk(min(top_k, p.shape[-1]), dim=-1)
            probs.append(top.values / top.values.sum(-1, keepdim=True))
            indices.append(top.indices)
    return TeacherTargets(input_ids, torch.cat(probs), torch.cat(indices), float(temperature))


def kd_loss(student_logits: Any, probs: Any, indices: Any, temperature: float) -> Any:
    """The loss (1) for a batch: student logits (B, T, V) against top-k teacher targets (B, T, k)."""
    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(temperature**2) * (probs * logq.gather(-1, indices)).sum(-1).mean()


def distill(student: Any, targets: TeacherTargets, config: KDConfig | None = None, *,
            progress: bool = False) -> tuple[Any, KDReport]:
    """Train ``student`` towards ``targets`` and return the trained model (LoRA merged) and a report.

    The windows are used in order, ``config.batch_size`` per step, cycling if the schedule needs more than there are.
    """
    config = config or KDConfig()
    if abs(targets.temperature - config.temperature) > 1e-12:
        raise LmshrinkError(f"The teacher targets were made at temperature {targets.temperature}, the config says "
                            f"{config.temperature}.")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    model, params = _trainable(student, config)
    report = KDReport(config, trained_parameters=sum(p.numel() for p in params))
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warm = max(int(config.warmup * config.steps), 1)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 10 %
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(config.steps - warm, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    n = targets.input_ids.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    model.train()
    bar = tqdm(range(config.steps), desc=f"KD healing ({config.method})", disable=not progress, leave=False)
    for step in bar:
        pick = order[[(step * config.batch_size + j) % n for j in range(config.batch_size)]]
        ids = model_inputs(model, targets.input_ids[pick])
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
        loss = kd_loss(logits, targets.probs[pick].to(logits.device), targets.indices[pick].to(logits.device),
                       config.temperature)
        value = loss.item()
        if not math.isfinite(value):
            raise LmshrinkError(f"KD healing diverged at step {step + 1} (loss {value}); lower --heal-option lr.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        report.losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
    model.eval()
    model = _frozen(_merged(model))
    report.seconds = time.perf_counter() - start
    return model, report


def _trainable(student: Any, config: KDConfig) -> tuple[Any, list[Any]]:
    if config.method == "full":  # factors included; trained PivGa rows and coef stay a PivGa layer (.factored)
        for name, p in student.named_parameters():
            p.requires_grad_("embed" not in name and "lm_head" not in name)
        return student, [p for p in student.parameters() if p.requires_grad]
    factored = bool(factored_layers(student))
    model = _with_lora(student, config) if not factored or _has_dense_linear(student) else _frozen(student)
    if factored:
        add_factor_deltas(student, config.lora_rank, config.lora_alpha)
    return model, [p for p in model.parameters() if p.requires_grad]


def _with_lora(student: Any, config: KDConfig) -> Any:
    """``student`` wrapped by peft with LoRA adapters on its dense linear layers, everything else frozen."""
    peft = require("peft", "heal", "LoRA healing")
    lora = peft.LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                           target_modules="all-linear", bias="none")
    return peft.get_peft_model(student, lora)


def _has_dense_linear(model: Any) -> bool:
    """Whether ``model`` has an ``nn.Linear`` besides its output head (what peft's "all-linear" adapts)."""
    head = model.get_output_embeddings()
    return any(isinstance(m, torch.nn.Linear) and m is not head for m in model.modules())


def _frozen(model: Any) -> Any:
    """``model`` with no parameter requiring gradients."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _merged(model: Any) -> Any:
    """The trained model with its factor deltas folded and peft's adapters merged into the weights."""
    fold_factor_deltas(model)
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
