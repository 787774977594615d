"""The one training loop: every model family, every Optuna trial, every benchmark uses `fit`.

Mini-batches are index slices of in-memory tensors (about 2x faster here than a DataLoader).
The step itself, `train_step`, is a plain function of tensors so that it can later be stacked
across many trials. The learning rate decays on a cosine schedule, which lets SGD settle on the
exact optimum of the linear families instead of bouncing around it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int = 32
    optimizer: str = "sgd"  # "sgd" | "adam"
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Tensors:
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor

    @classmethod
    def from_arrays(cls, X_train, y_train, X_val, y_val, device: str = "cpu") -> Tensors:
        def to(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

        return cls(to(X_train), to(y_train), to(X_val), to(y_val))


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_val(self) -> float:
        return self.val_loss[-1]


class Diverged(RuntimeError):
    """The loss became NaN or infinite: these settings cannot train this model."""

    def __init__(self, epoch: int, history: History):
        super().__init__(f"loss is not finite at epoch {epoch}")
        self.epoch = epoch
        self.history = history


EpochCallback = Callable[[int, float, float], None]


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        # AdamW: decoupled decay, since plain Adam's L2 term is scaled away by its normaliser.
        # fused: one kernel for all parameters, about 35% faster per step on these tiny models.
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd or adam")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    loss = nn.functional.mse_loss(model(xb), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.mse_loss(model(X), y))


def fit(model: nn.Module, data: Tensors, settings: TrainSettings, on_epoch: EpochCallback | None = None) -> History:
    """Train `model` in place; return per-epoch train and validation MSE.

    `on_epoch(epoch, train_loss, val_loss)` runs after each epoch; an exception it raises (such as
    Optuna's TrialPruned) stops training and propagates. Raises Diverged on a non-finite loss.
    """
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    optimizer = make_optimizer(settings.optimizer, model.parameters(), settings.lr, settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    history = History()
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        train_loss = _train_epoch(model, optimizer, data, settings.batch_size, generator)
        schedule.step()
        model.eval()
        val_loss = mse(model, data.X_val, data.y_val)
        history.train_loss.append(train_loss)
        history.val_loss.append(val_loss)
        history.seconds = time.perf_counter() - start
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise Diverged(epoch, history)
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val_loss)
    return history


def _train_epoch(model, optimizer, data: Tensors, batch_size: int, generator: torch.Generator) -> float:
    n = data.X_train.shape[0]
    order = torch.randperm(n, generator=generator).to(data.X_train.device)
    total = torch.zeros((), device=data.X_train.device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        total += train_step(model, optimizer, data.X_train[index], data.y_train[index]) * index.numel()
    return float(total) / n


def init_seed(seed: int) -> None:
    """Seed weight initialisation; call right before building a model."""
    torch.manual_seed(seed)
