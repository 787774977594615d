"""The one training loop: every model family, every Optuna trial, every benchmark uses `fit`.

`fit` trains a list of members (a model spec plus its own training settings) at once. Members that
share a family, feature set, optimizer and batch size train as one `Stack`: one forward, one
backward and one optimizer update per mini-batch step for all of them, which is what makes many
small trials cheap (a step of a tiny model costs almost nothing but Python and kernel-launch
overhead). A single model is a stack of one.

Each member keeps its own learning rate, epochs, cosine schedule, seed (initialisation and
shuffling) and optimizer state, so it follows the trajectory it would follow alone. A member
leaves the stack when its epochs are over, when its loss stops being finite (DIVERGED) or when
`on_epoch` asks it to stop (PRUNED); leaving changes nothing for the others.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline import torch_private
from pipeline.errors import InputError
from pipeline.models import Affine, ModelSpec, Stack

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int = 32
    optimizer: str = "sgd"  # "sgd" | "adam" (AdamW: decoupled weight decay)
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Member:
    """One model to train: its architecture and its training settings."""

    spec: ModelSpec
    settings: TrainSettings


@dataclass(frozen=True)
class Tensors:
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    # Train on standardised features and target (`models.Affine`), folded back into each exported
    # model: quantities of physical size (1 to 10^4, say) would otherwise defeat one learning rate.
    standardize: bool = False

    @classmethod
    def from_arrays(
        cls,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        device: str = "cpu",
        standardize: bool = False,
    ) -> Tensors:
        _usable(device)

        def to(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

        return cls(to(X_train), to(y_train), to(X_val), to(y_val), standardize)


def _usable(device: str) -> None:
    """Refuse a device this machine's torch cannot use (`cuda` with a CPU-only build, `cuda:3` on a
    machine with one GPU) in one line naming the key, rather than torch's assertion mid-tuning."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise InputError(
            f"training.device = {device!r}: not usable on this machine ({str(exc).splitlines()[0]}; "
            f"torch {torch.__version__}, {gpus} CUDA device(s)): set training.device: cpu"
        ) from None


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_val(self) -> float:
        return self.val_loss[-1]


@dataclass
class Trained:
    """What became of one member: its model (as it was when it left the stack) and its curves."""

    model: nn.Module
    history: History
    state: str  # "COMPLETE" | "PRUNED" (stopped by on_epoch) | "DIVERGED" (loss not finite)


# on_epoch(member, epoch, train_loss, val_loss) -> True to stop that member (it ends PRUNED).
# `member` is the member's index in the list given to `fit`.
EpochCallback = Callable[[int, int, float, float], bool]
DoneCallback = Callable[[int, Trained], None]  # (member, what became of it)


def fit(
    members: Sequence[Member],
    data: Tensors,
    on_epoch: EpochCallback | None = None,
    on_done: DoneCallback | None = None,
) -> list[Trained]:
    """Train every member; return one `Trained` per member, in the order given.

    `on_done(member, trained)` runs as soon as a member leaves its stack, while the others train on.
    """
    for member in members:
        _check(member.settings)
    results: list[Trained | None] = [None] * len(members)
    with _denormals_flushed(data.X_train.device):
        for indices in stack_groups(members):
            stacked = _fit_stack([members[i] for i in indices], indices, data, on_epoch, on_done)
            for index, trained in zip(indices, stacked, strict=True):
                results[index] = trained
    return results


@contextmanager
def _denormals_flushed(device: torch.device) -> Iterator[None]:
    """Floats below 1e-38 (Adam's second moments of tiny gradients) cost a CPU about a hundred
    times a normal operation: flushed to zero while training they halve an MLP tuning's time, and
    change no number above float32's smallest normal one. Set back afterwards."""
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def stack_groups(members: Sequence[Member]) -> list[list[int]]:
    """Indices of the members that train together: same family, feature set, optimizer and batch size.

    Width and depth may differ inside a stack (padding). Batch sizes may not: padding a batch of 16
    rows to 32 doubles its work, and measured on the default searches, one stack per batch size is
    faster for every family than one stack whose members sit out each other's extra steps.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, member in enumerate(members):
        spec, settings = member.spec, member.settings
        groups[(spec.family, spec.terms, settings.optimizer, settings.batch_size)].append(index)
    return list(groups.values())


def _check(settings: TrainSettings) -> None:
    if settings.optimizer not in ("sgd", "adam"):
        raise ValueError(f"unknown optimizer {settings.optimizer!r}; expected sgd or adam")
    if settings.epochs < 1 or settings.batch_size < 1 or not settings.lr > 0:
        raise ValueError(f"training settings out of range: {settings}")


@torch.no_grad()  # gradients are written out by `Stack.backward`, not recorded by autograd
def _fit_stack(
    members: list[Member],
    indices: list[int],
    data: Tensors,
    on_epoch: EpochCallback | None,
    on_done: DoneCallback | None,
) -> list[Trained]:
    device = data.X_train.device
    generators = [torch.Generator().manual_seed(member.settings.seed) for member in members]
    stack = Stack([member.spec for member in members], data.X_train.shape[1], generators, device=str(device))
    train_x, train_y, val_x, val_y = _prepared(stack, data)
    unit = stack.affine.y_scale**2 if stack.affine is not None else 1.0  # losses back in y's own units
    n = train_x.shape[0]
    optimizer = _Optimizer.of(members, stack.flat)
    rows = list(range(len(members)))  # stack row -> position in `members`
    results: dict[int, Trained] = {}
    histories = [History() for _ in members]
    start = time.perf_counter()
    epoch = 0
    while rows:
        order = torch.stack([torch.randperm(n, generator=generators[r]) for r in rows]).to(device)
        x_epoch, y_epoch = _shuffled(train_x, train_y, order)
        # Inference mode skips autograd's bookkeeping on every tensor call, which `no_grad` still
        # pays, and a step is bound by the number of calls (about 10 % of a step). What it makes
        # here stays here (the losses leave as floats); `flat` and the optimizer's state, made
        # outside, are updated in place.
        with torch.inference_mode():
            train_sse = _train_epoch(stack, optimizer, x_epoch, y_epoch, members[0].settings.batch_size, epoch)
            val_mse = _val_mse(stack, val_x, val_y)
        leaving = []
        if unit != 1.0:  # in float64: a y of 1e20 (or 1e-30) squares past float32's range
            train_sse, val_mse = train_sse.double() * unit, val_mse.double() * unit
        losses = zip((train_sse / n).tolist(), val_mse.tolist(), strict=True)
        for row, (sse, val) in enumerate(losses):
            member = rows[row]
            history = histories[member]
            history.train_loss.append(sse)
            history.val_loss.append(val)
            history.seconds = time.perf_counter() - start
            outcome = _outcome(members[member], indices[member], epoch, sse, val, on_epoch)
            if outcome is not None:
                results[member] = Trained(stack.export(row), history, outcome)
                leaving.append(row)
                if on_done is not None:
                    on_done(indices[member], results[member])
        if leaving:
            kept = [row for row in range(len(rows)) if row not in leaving]
            rows = [rows[row] for row in kept]
            if rows:
                stack.keep(kept)
                optimizer = optimizer.keep(kept)
        epoch += 1
    return [results[member] for member in range(len(members))]


def _prepared(stack: Stack, data: Tensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stack's training and validation features and targets, standardised if `data` asks
    for it (the stack then remembers how, for its exports)."""
    train_x, val_x = stack.features(data.X_train), stack.features(data.X_val)
    if not (finite := torch.isfinite(train_x).all(0)).all():  # every trial would diverge, saying nothing
        names = [name for name, ok in zip(stack.variables + stack.terms, finite.tolist(), strict=True) if not ok]
        raise InputError(f"features {names} are not finite in float32 on the training rows: change the inputs' units")
    if not data.standardize:
        return train_x, data.y_train, val_x, data.y_val
    stack.affine = affine = Affine.fit(train_x, data.y_train)
    scaled = [(x - affine.x_shift) / affine.x_scale for x in (train_x, val_x)]
    train_y, val_y = ((y - affine.y_shift) / affine.y_scale for y in (data.y_train, data.y_val))
    return scaled[0], train_y, scaled[1], val_y


def _outcome(
    member: Member, index: int, epoch: int, train_loss: float, val_loss: float, on_epoch: EpochCallback | None
) -> str | None:
    """Why a member leaves the stack after this epoch, or None if it goes on."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return "DIVERGED"
    if on_epoch is not None and on_epoch(index, epoch, train_loss, val_loss):
        return "PRUNED"
    return "COMPLETE" if epoch + 1 >= member.settings.epochs else None


@dataclass
class _Optimizer:
    """SGD or AdamW over a stack, each member with its own learning rate, schedule and weight decay.

    Every tensor has the member axis first, so dropping members is one index. Members of a stack
    start together and step together, so they share Adam's step count.
    """

    lr: torch.Tensor  # (K, 1) base learning rate
    epochs: torch.Tensor  # (K, 1) length of each member's cosine schedule
    weight_decay: torch.Tensor  # (K, 1)
    adam: bool
    exp_avg: torch.Tensor  # (K, P) Adam's first moment (empty for SGD)
    exp_avg_sq: torch.Tensor  # (K, P) Adam's second moment (empty for SGD)
    steps: torch.Tensor  # () steps taken, for Adam's bias corrections
    scratch: torch.Tensor  # (K, P) Adam's direction, reused: a fresh one each step costs page faults
    decays: bool  # any member with weight decay (asked once, not every step)

    @classmethod
    def of(cls, members: list[Member], flat: torch.Tensor) -> _Optimizer:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=flat.device).unsqueeze(1)

        settings = [member.settings for member in members]
        adam = settings[0].optimizer == "adam"
        moments = torch.zeros_like(flat) if adam else flat.new_empty(0)
        return cls(
            lr=column([s.lr for s in settings]),
            epochs=column([s.epochs for s in settings]),
            weight_decay=column([s.weight_decay for s in settings]),
            adam=adam,
            exp_avg=moments,
            exp_avg_sq=moments.clone(),
            steps=torch.zeros((), device=flat.device),
            scratch=moments.clone(),
            decays=any(s.weight_decay > 0 for s in settings),
        )

    def keep(self, rows: list[int]) -> _Optimizer:
        index = torch.tensor(rows, device=self.lr.device)

        def pick(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.index_select(0, index) if tensor.numel() else tensor

        weight_decay = pick(self.weight_decay)
        return _Optimizer(
            pick(self.lr),
            pick(self.epochs),
            weight_decay,
            self.adam,
            pick(self.exp_avg),
            pick(self.exp_avg_sq),
            self.steps,
            pick(self.scratch),
            self.decays and bool((weight_decay > 0).any()),
        )

    def epoch_lr(self, epoch: int) -> torch.Tensor:
        """(K, 1) learning rates for this epoch: cosine decay to zero over each member's own epochs."""
        return self.lr * 0.5 * (1 + torch.cos(math.pi * epoch / self.epochs))

    def step(self, stack: Stack, grad: torch.Tensor, lr: torch.Tensor) -> None:
        flat = stack.flat
        if stack.trainable is not None:
            grad.mul_(stack.trainable)  # frozen identity layers of shallower members
        if self.decays:  # decoupled, as AdamW; for SGD the same as L2
            decay = flat * (lr * self.weight_decay)
            flat.sub_(decay if stack.trainable is None else decay * stack.trainable)
        if not self.adam:
            flat.addcmul_(grad, lr, value=-1)
            return
        # PyTorch's fused AdamW kernel takes one learning rate, so it moves a zeroed scratch tensor
        # by minus each member's Adam direction, which the members' own learning rates then scale:
        # three passes over the parameters instead of eight. (`adam_direction` counts `steps`.)
        scratch = self.scratch.zero_()
        torch_private.adam_direction(scratch, grad, (self.exp_avg, self.exp_avg_sq), self.steps, ADAM_BETAS, ADAM_EPS)
        flat.addcmul_(scratch, lr)


def _shuffled(train_x: torch.Tensor, train_y: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's training rows in its own shuffled order (`order`: (K, n) row indices)."""
    rows, n = order.shape
    x_epoch = train_x.index_select(0, order.view(-1)).view(rows, n, -1)
    return x_epoch, train_y.index_select(0, order.view(-1)).view(rows, n)


def _train_epoch(
    stack: Stack, optimizer: _Optimizer, x_epoch: torch.Tensor, y_epoch: torch.Tensor, batch_size: int, epoch: int
) -> torch.Tensor:
    """One epoch for every member, on its rows in its own order (`x_epoch` (K, n, in), `y_epoch`
    (K, n)); returns each member's sum of squared training errors."""
    errors = torch.empty_like(y_epoch)
    layers = stack.layers(stack.flat)
    grad = torch.empty_like(stack.flat)
    lr = optimizer.epoch_lr(epoch)
    # The epoch's batches as views, made at once: slicing three tensors at every step costs more.
    batches = zip(x_epoch.split(batch_size, 1), y_epoch.split(batch_size, 1), errors.split(batch_size, 1), strict=True)
    for x_batch, y_batch, error in batches:
        inputs: list[torch.Tensor] = []
        prediction = Stack.forward(layers, x_batch, inputs)
        torch.sub(prediction, y_batch, out=error)
        # The batch MSE's gradient with respect to the predictions.
        Stack.backward(layers, inputs, error * (2 / error.shape[1]), grad)
        optimizer.step(stack, grad, lr)
    return (errors * errors).sum(1)


def _val_mse(stack: Stack, val_x: torch.Tensor, val_y: torch.Tensor) -> torch.Tensor:
    prediction = Stack.forward(stack.layers(stack.flat), val_x.expand(len(stack), -1, -1))
    return ((prediction - val_y) ** 2).mean(1)


@torch.no_grad()
def mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.mse_loss(model(X), y))
