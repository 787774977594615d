"""The three model families behind one interface: `model(X) -> y` of shape (n,).

`linear` and `cross` are the same linear layer over named features (cross appends products of
raw features), so their weights read back as an equation. `mlp` is a ReLU network: piecewise
linear, so it can only approximate products and powers with straight segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations_with_replacement

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "linear" | "cross" | "mlp"
    crosses: tuple[tuple[int, int], ...] = ()  # cross only
    depth: int = 2  # mlp only
    width: int = 32  # mlp only


def all_crosses(n_features: int) -> tuple[tuple[int, int], ...]:
    """Every pairwise product and square: the `auto` feature crosses."""
    return tuple(combinations_with_replacement(range(n_features), 2))


def term_name(i: int, j: int) -> str:
    return f"x{i}**2" if i == j else f"x{i}*x{j}"


class LinearModel(nn.Module):
    """y = w . features(x) + b, where features are the raw inputs plus optional crosses."""

    def __init__(self, n_features: int, crosses: tuple[tuple[int, int], ...] = ()):
        super().__init__()
        self.n_features = n_features
        self.crosses = tuple(crosses)
        self.register_buffer("left", torch.tensor([i for i, _ in self.crosses], dtype=torch.long))
        self.register_buffer("right", torch.tensor([j for _, j in self.crosses], dtype=torch.long))
        self.linear = nn.Linear(n_features + len(self.crosses), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.crosses:
            return x
        return torch.cat([x, x[:, self.left] * x[:, self.right]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x)).squeeze(-1)

    def feature_names(self) -> list[str]:
        return [f"x{i}" for i in range(self.n_features)] + [term_name(i, j) for i, j in self.crosses]

    def coefficients(self) -> dict[str, float]:
        """Learned weight per feature name, plus the bias under the key '1'."""
        weights = self.linear.weight.detach().cpu().double().squeeze(0).tolist()
        table = dict(zip(self.feature_names(), weights, strict=True))
        table["1"] = float(self.linear.bias.detach().cpu().double().item())
        return table


class MLP(nn.Module):
    def __init__(self, n_features: int, depth: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        size = n_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def build_model(spec: ModelSpec, n_features: int) -> nn.Module:
    if spec.family == "linear":
        return LinearModel(n_features)
    if spec.family == "cross":
        return LinearModel(n_features, spec.crosses)
    if spec.family == "mlp":
        return MLP(n_features, spec.depth, spec.width)
    raise ValueError(f"unknown model family {spec.family!r}; expected linear, cross or mlp")
