"""The one training loop: every model family, every Optuna trial, every benchmark uses `fit`.

`fit` trains a list of members (a model spec plus its own training settings) at once. Members that
share a family, feature set and optimizer train as one `Stack`: one forward, one backward and one
optimizer update per mini-batch step for all of them, which is what makes many small trials cheap
(a step of a tiny model costs almost nothing but Python and kernel-launch overhead). A single model
is a stack of one.

Each member keeps its own learning rate, epochs, cosine schedule, seed (initialisation and
shuffling), batch size and optimizer state, so it follows the trajectory it would follow alone.
Members with different batch sizes share a timeline of steps: a member takes its step i at tick i
and sits out the ticks after its epoch's last batch. A member leaves the stack when its epochs are
over, when its loss stops being finite (DIVERGED) or when `on_epoch` asks it to stop (PRUNED);
leaving changes nothing for the others.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.models import ModelSpec, Stack

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

# Gradients accumulate into views of one flat buffer (see `_leaves`); PyTorch warns that such views
# are not laid out like a standalone tensor. They are correct, and the point of the layout.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


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


@dataclass
class Trained:
    """What became of one member: its model (as it was when it left the stack) and its curves."""

    model: nn.Module
    history: History
    state: str  # "COMPLETE" | "PRUNED" (stopped by on_epoch) | "DIVERGED" (loss not finite)


# on_epoch(member, epoch, train_loss, val_loss) -> True to stop that member (it ends PRUNED).
# `member` is the member's index in the list given to `fit`.
EpochCallback = Callable[[int, int, float, float], bool]
DoneCallback = Callable[[int, "Trained"], None]


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
    for indices in stack_groups(members):
        stacked = _fit_stack([members[i] for i in indices], indices, data, on_epoch, on_done)
        for index, trained in zip(indices, stacked, strict=True):
            results[index] = trained
    return results


def stack_groups(members: Sequence[Member]) -> list[list[int]]:
    """Indices of the members that train together: same family, feature set and optimizer.

    Width and depth may differ inside a stack (padding). Batch sizes may too for the linear
    families, whose step costs almost nothing but overhead: they share one timeline of ticks, and
    fewer ticks is what counts. An MLP step is its matrix products: padding a batch of 16 rows to 32
    would double its cost, so MLP members stack by batch size.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, member in enumerate(members):
        key = (member.spec.family, member.spec.crosses, member.settings.optimizer)
        groups[key + ((member.settings.batch_size,) if member.spec.hidden else ())].append(index)
    return list(groups.values())


def _check(settings: TrainSettings) -> None:
    if settings.optimizer not in ("sgd", "adam"):
        raise ValueError(f"unknown optimizer {settings.optimizer!r}; expected sgd or adam")
    if settings.epochs < 1 or settings.batch_size < 1 or not settings.lr > 0:
        raise ValueError(f"training settings out of range: {settings}")


def _fit_stack(members: list[Member], indices: list[int], data: Tensors, on_epoch, on_done) -> list[Trained]:
    device = data.X_train.device
    generators = [torch.Generator().manual_seed(member.settings.seed) for member in members]
    stack = Stack([member.spec for member in members], data.X_train.shape[1], generators, device=str(device))
    train_x, val_x = stack.features(data.X_train), stack.features(data.X_val)
    n = train_x.shape[0]
    state = _MemberState.of(members, n, device)
    rows = list(range(len(members)))  # stack row -> position in `members`
    results: dict[int, Trained] = {}
    histories = [History() for _ in members]
    start = time.perf_counter()
    weights, biases, grad = _leaves(stack)
    epoch = 0
    while rows:
        order = torch.stack([torch.randperm(n, generator=generators[r]) for r in rows]).to(device)
        train_sse = _train_epoch(stack, state, weights, biases, grad, train_x, data.y_train, order, epoch)
        val_mse = _val_mse(stack, weights, biases, val_x, data.y_val)
        leaving = []
        for row, (sse, val) in enumerate(zip((train_sse / n).tolist(), val_mse.tolist(), strict=True)):
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
                state = state.keep(kept, [members[r] for r in rows], n)
                weights, biases, grad = _leaves(stack)
        epoch += 1
    return [results[member] for member in range(len(members))]


def _outcome(member: Member, index: int, epoch: int, train_loss: float, val_loss: float, on_epoch) -> str | None:
    """Why a member leaves the stack after this epoch, or None if it goes on."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return "DIVERGED"
    if on_epoch is not None and on_epoch(index, epoch, train_loss, val_loss):
        return "PRUNED"
    return "COMPLETE" if epoch + 1 >= member.settings.epochs else None


def _leaves(stack: Stack) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Per-layer parameter views that autograd treats as leaves, each accumulating its gradient
    into the matching view of one flat buffer: the optimizer then works on two (K, P) tensors."""
    grad = torch.zeros_like(stack.flat)
    weights, biases = stack.layer_views(stack.flat)
    grad_weights, grad_biases = stack.layer_views(grad)
    for parameter, parameter_grad in zip(weights + biases, grad_weights + grad_biases, strict=True):
        parameter.requires_grad_(True)
        parameter.grad = parameter_grad
    return weights, biases, grad


@dataclass
class _MemberState:
    """Per-member tensors, each with the member axis first, so that dropping members is one index."""

    lr: torch.Tensor  # (K, 1) base learning rate
    epochs: torch.Tensor  # (K, 1)
    weight_decay: torch.Tensor  # (K, 1)
    adam: bool
    exp_avg: torch.Tensor  # (K, P) Adam's first moment (unused for SGD)
    exp_avg_sq: torch.Tensor  # (K, P) Adam's second moment
    steps: torch.Tensor  # (K, 1) optimizer steps taken, for Adam's bias correction
    timeline: _Timeline

    @classmethod
    def of(cls, members: list[Member], n: int, device) -> _MemberState:
        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)

        settings = [member.settings for member in members]
        return cls(
            lr=column([s.lr for s in settings]),
            epochs=column([s.epochs for s in settings]),
            weight_decay=column([s.weight_decay for s in settings]),
            adam=settings[0].optimizer == "adam",
            exp_avg=torch.zeros(0, device=device),
            exp_avg_sq=torch.zeros(0, device=device),
            steps=torch.zeros(len(members), 1, device=device),
            timeline=_Timeline.of([s.batch_size for s in settings], n, device),
        )

    def keep(self, rows: list[int], members: list[Member], n: int) -> _MemberState:
        index = torch.tensor(rows, device=self.lr.device)

        def pick(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.index_select(0, index) if tensor.numel() else tensor

        return _MemberState(
            lr=pick(self.lr),
            epochs=pick(self.epochs),
            weight_decay=pick(self.weight_decay),
            adam=self.adam,
            exp_avg=pick(self.exp_avg),
            exp_avg_sq=pick(self.exp_avg_sq),
            steps=pick(self.steps),
            timeline=_Timeline.of([m.settings.batch_size for m in members], n, self.lr.device),
        )


@dataclass(frozen=True)
class _Timeline:
    """Where each member's mini-batches fall on the stack's shared ticks (tick-major tensors).

    Member k's step i takes rows [i*B_k, (i+1)*B_k) of its shuffled order at tick i; rows beyond
    its batch (padding up to the largest batch) weigh 0, and after its last batch it is idle.
    """

    positions: torch.Tensor  # (K, ticks * width) positions into each member's shuffled order, tick-major
    weight: torch.Tensor  # (ticks, K, width) 1 for a real row, 0 for padding
    gradient_scale: torch.Tensor  # (ticks, K, width) d(batch MSE)/d(error) = 2 / rows, 0 on padding
    active: torch.Tensor  # (ticks, K, 1) 1 when the member takes a step at this tick
    ticks: int
    width: int

    @classmethod
    def of(cls, batch_sizes: list[int], n: int, device) -> _Timeline:
        sizes = torch.tensor(batch_sizes).clamp(max=n).view(1, -1, 1)  # (1, K, 1)
        width = int(sizes.max())
        ticks = int(((n + sizes - 1) // sizes).max())
        tick = torch.arange(ticks).view(-1, 1, 1)
        slot = torch.arange(width).view(1, 1, -1)
        positions = tick * sizes + slot  # (ticks, K, width)
        real = ((slot < sizes) & (positions < n)).float()
        rows = real.sum(2, keepdim=True)
        return cls(
            positions=positions.clamp(max=n - 1).permute(1, 0, 2).reshape(len(batch_sizes), -1).to(device),
            weight=real.to(device),
            gradient_scale=(2 * real / rows.clamp(min=1)).to(device),
            active=(rows > 0).float().to(device),
            ticks=ticks,
            width=width,
        )


@dataclass(frozen=True)
class _StepSizes:
    """Each member's optimizer coefficients at every tick of one epoch, (ticks, K, 1) each, worked
    out once per epoch so that a step is only the few operations on the parameters themselves."""

    lr: torch.Tensor  # cosine-decayed learning rate, 0 when idle
    step: torch.Tensor  # lr divided by Adam's first bias correction (SGD: lr)
    first: torch.Tensor  # Adam: weight of the new gradient in the first moment (0 when idle)
    second: torch.Tensor  # Adam: weight of the squared gradient in the second moment
    root_correction: torch.Tensor  # Adam: 1 / sqrt(second bias correction)
    decay: torch.Tensor | None  # lr * weight decay, None when no member decays
    # Adam: (ticks,) step count shared by all members, when all step at every tick (see _update).
    lockstep: torch.Tensor | None

    @classmethod
    def of(cls, state: _MemberState, epoch: int) -> _StepSizes:
        active = state.timeline.active
        # Cosine decay to zero over each member's own epochs.
        lr = state.lr * 0.5 * (1 + torch.cos(math.pi * epoch / state.epochs)) * active
        decay = lr * state.weight_decay if bool((state.weight_decay > 0).any()) else None
        if not state.adam:
            return cls(lr, lr, active, active, active, decay, None)
        beta1, beta2 = ADAM_BETAS
        steps = state.steps + active.cumsum(0)  # each member's step count after each tick
        in_lockstep = bool((active == 1).all()) and bool((state.steps == state.steps[0]).all())
        return cls(
            lr=lr,
            step=lr / (1 - beta1**steps),
            first=(1 - beta1) * active,
            second=(1 - beta2) * active,
            root_correction=(1 - beta2**steps).rsqrt(),
            decay=decay,
            lockstep=steps[:, 0, 0].contiguous() if in_lockstep else None,
        )


def _train_epoch(stack, state: _MemberState, weights, biases, grad, train_x, train_y, order, epoch) -> torch.Tensor:
    """One epoch for every member; returns each member's sum of squared training errors.

    `order` (K, n) is each member's shuffled row order for this epoch.
    """
    timeline = state.timeline
    rows = len(stack)
    # Each member's shuffled rows, cut into its batches on the shared timeline: (ticks, K, width, F).
    taken = order.gather(1, timeline.positions).view(rows, timeline.ticks, timeline.width).transpose(0, 1)
    taken = taken.reshape(-1)
    x_epoch = train_x.index_select(0, taken).view(timeline.ticks, rows, timeline.width, -1)
    y_epoch = train_y.index_select(0, taken).view(timeline.ticks, rows, timeline.width)
    sizes = _StepSizes.of(state, epoch)
    errors = torch.empty_like(y_epoch)
    for tick in range(timeline.ticks):
        grad.zero_()
        prediction = Stack.forward(weights, biases, x_epoch[tick])
        with torch.no_grad():
            error = torch.sub(prediction, y_epoch[tick], out=errors[tick])
        # The batch MSE's gradient with respect to the predictions, fed straight to autograd.
        prediction.backward(error * timeline.gradient_scale[tick])
        with torch.no_grad():
            _update(stack, state, grad, sizes, tick)
    state.steps += timeline.active.sum(0)
    return (errors * errors * timeline.weight).sum((0, 2))


def _update(stack: Stack, state: _MemberState, grad: torch.Tensor, sizes: _StepSizes, tick: int) -> None:
    """One optimizer step for every member (an idle one has step size 0 and does not move):
    SGD, or AdamW written as tensor operations with each member's own coefficients."""
    flat = stack.flat
    if stack.trainable is not None:
        grad.mul_(stack.trainable)  # frozen identity layers of shallower members
    if sizes.decay is not None:
        decay = flat * sizes.decay[tick]
        flat.sub_(decay if stack.trainable is None else decay * stack.trainable)
    if not state.adam:
        flat.sub_(grad * sizes.step[tick])
        return
    if not state.exp_avg.numel():
        state.exp_avg = torch.zeros_like(flat)
        state.exp_avg_sq = torch.zeros_like(flat)
    if sizes.lockstep is not None:
        _fused_adam(flat, state, grad, sizes, tick)
        return
    state.exp_avg.lerp_(grad, sizes.first[tick])
    state.exp_avg_sq.lerp_(grad * grad, sizes.second[tick])
    denominator = state.exp_avg_sq.sqrt().mul_(sizes.root_correction[tick]).add_(ADAM_EPS)
    flat.addcdiv_(state.exp_avg * sizes.step[tick], denominator, value=-1)


def _fused_adam(flat: torch.Tensor, state: _MemberState, grad: torch.Tensor, sizes: _StepSizes, tick: int) -> None:
    """Adam in one pass (PyTorch's fused kernel, as AdamW(fused=True) runs it) when all members share
    a step count. The kernel takes one learning rate, so it moves a zeroed scratch tensor by -1 times
    each member's Adam direction, which the members' own learning rates then scale: three passes
    over the parameters instead of eight."""
    scratch = torch.zeros_like(flat)
    beta1, beta2 = ADAM_BETAS
    torch._fused_adamw_(
        [scratch], [grad], [state.exp_avg], [state.exp_avg_sq], [], [sizes.lockstep[tick]],
        lr=1.0, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=ADAM_EPS, amsgrad=False, maximize=False,
    )
    flat.addcmul_(scratch, sizes.lr[tick])


@torch.no_grad()
def _val_mse(stack: Stack, weights, biases, val_x: torch.Tensor, val_y: torch.Tensor) -> torch.Tensor:
    prediction = Stack.forward(weights, biases, val_x.expand(len(stack), -1, -1))
    return ((prediction - val_y) ** 2).mean(1)


@torch.no_grad()
def mse(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.mse_loss(model(X), y))
