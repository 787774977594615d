"""The three model families, as stacks: K members trained at once as one model with a leading member axis.

Every family is the same network over named features: `features` (the raw inputs, plus the terms
of `pipeline.terms` for `cross`: monomials, functions of inputs), then `depth` hidden ReLU layers
(none for `linear` and `cross`), then one output.
A `Stack` holds K such networks as tensors of shape (K, in, out) and runs them with `torch.baddbmm`,
so K small models cost little more than one. Members of one stack may differ in width and depth:
narrower members are padded with zero units and shallower ones with frozen identity layers, which
changes none of their numbers (ReLU passes its own non-negative output through unchanged).

`LinearModel` and `MLP` are the single trained models that leave the stack (`Stack.export`): their
weights read back as an equation (linear families) and are what gets saved and logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline import terms as library
from pipeline.equations import TORCH_OPS, shorthand

# The equation allow-list's functions, on tensors (terms such as sin(x0) are built from them).
TORCH_FUNCTIONS = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "arcsin": torch.asin,
    "arccos": torch.acos,
    "arctan": torch.atan,
}


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "linear" | "cross" | "mlp"
    terms: tuple[str, ...] = ()  # cross only: canonical term names beyond the raw inputs
    depth: int = 2  # mlp only
    width: int = 32  # mlp only
    variables: tuple[str, ...] = ()  # the inputs' names; () is the shorthand x0..x{n-1}
    # MLP only: inputs that enter through their logarithm (declared positive quantities: physical
    # laws multiply powers of them, which logarithms make sums of).
    log_inputs: tuple[str, ...] = ()

    @property
    def hidden(self) -> tuple[int, ...]:
        """Widths of the hidden ReLU layers: none for the linear families."""
        return (self.width,) * self.depth if self.family == "mlp" else ()

    def inputs(self, n_features: int) -> tuple[str, ...]:
        return self.variables or shorthand(n_features)


@dataclass(frozen=True)
class Affine:
    """The standardisation a stack trains under: features (K-independent) and target. The exported
    model folds it into its first and last layers, so it takes and gives the data's own units."""

    x_shift: torch.Tensor  # (in,)
    x_scale: torch.Tensor  # (in,)
    y_shift: float
    y_scale: float

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor) -> Affine:
        """Centre and scale each feature column and the target on the training rows; then scale the
        features together so that their covariance's largest eigenvalue is 1. Hundreds of
        correlated library terms (r, r**2, r**0.5 on [1, 5]) add up to a curvature that no fixed
        learning rate survives; so scaled, a learning rate means the same on any library."""
        (x_shift, x_scale), (y_shift, y_scale) = _moments(x), _moments(y)
        x_scale = torch.where(x_scale > 0, x_scale, 1.0)
        standard = ((x - x_shift) / x_scale).double()
        largest = float(torch.linalg.eigvalsh(standard.T @ standard / max(len(x) - 1, 1))[-1])
        y_scale = float(y_scale)
        return cls(x_shift, x_scale * max(largest, 1.0) ** 0.5, float(y_shift), y_scale if y_scale > 0 else 1.0)

    def fold(self, linears: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Layers (weight (out, in), bias (out,)) trained on standardised data, made to take raw
        features and give raw y: W (x - m)/s + b is (W/s) x + (b - W m/s)."""
        (weight, bias), *rest = linears
        scale, shift = self.x_scale.to(weight), self.x_shift.to(weight)
        first = (weight / scale, bias - (weight / scale) @ shift)
        layers = [first, *rest]
        weight, bias = layers[-1]
        layers[-1] = (weight * self.y_scale, bias * self.y_scale + self.y_shift)
        return layers


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each column (dimension 0). In float64 where float32's overflow: a column
    of values near 1e37 (a product of powers of quantities in SI units) sums past 3.4e38, although
    each value and the result fit; elsewhere float32's own, as the models were always fitted."""
    mean, std = x.mean(0), x.std(0)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        wide = x.double()
        mean, std = wide.mean(0).to(x.dtype), wide.std(0).to(x.dtype)
    return mean, std


def logged(x: torch.Tensor, variables: tuple[str, ...], log_inputs: tuple[str, ...]) -> torch.Tensor:
    """x with the columns named in `log_inputs` replaced by their logarithms."""
    if not log_inputs:
        return x
    mask = torch.tensor([name in log_inputs for name in variables], device=x.device)
    return torch.where(mask, torch.log(torch.where(mask, x, 1.0)), x)


def features(x: torch.Tensor, terms: tuple[str, ...] = (), variables: tuple[str, ...] = ()) -> torch.Tensor:
    """The raw inputs followed by the named terms, evaluated on x (..., n_features)."""
    if not terms:
        return x
    columns = library.columns(x, terms, variables or shorthand(x.shape[-1]), TORCH_FUNCTIONS, TORCH_OPS)
    # Stacked at once, and converted only where needed (a constant term): each extra op per column
    # is a node of the exported graph, and a library of 50 terms made 200 of them, most of the
    # seconds MLflow spends tracing and saving a model.
    return torch.cat([x, torch.stack([_column(c, x) for c in columns], -1)], -1)


def _column(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A term's column as it came (a tensor of x's dtype), or a constant term spread over x's rows."""
    if isinstance(value, torch.Tensor) and value.dtype == x.dtype:
        return value
    return torch.as_tensor(value, dtype=x.dtype).expand(x.shape[:-1])


def layer_shapes(spec: ModelSpec, n_features: int) -> list[tuple[int, int]]:
    """(in, out) of every layer of one member, input layer first, output layer last."""
    sizes = [n_features + len(spec.terms), *spec.hidden, 1]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def init_layers(
    spec: ModelSpec, n_features: int, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One member's initial (weight (in, out), bias (out,)) per layer, drawn from its own generator.

    nn.Linear's default distribution, U(-1/sqrt(in), 1/sqrt(in)) for weights and biases; the
    generator is the member's own, so its start does not depend on which stack it trains in.
    """
    layers = []
    for n_in, n_out in layer_shapes(spec, n_features):
        bound = 1.0 / math.sqrt(n_in)
        weight = (torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound
        bias = (torch.rand(n_out, generator=generator) * 2 - 1) * bound
        layers.append((weight.T.contiguous(), bias))
    return layers


@dataclass(frozen=True)
class Layers:
    """A stack's layers for one epoch of training steps: weights (K, in, out), biases (K, 1, out),
    and the views of them each step would otherwise make again. A step of a small stack is bound by
    the number of tensor calls, not by arithmetic (a view costs a few microseconds, as a small
    product does), so an epoch of 50 steps makes these once rather than 50 times."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    transposed: list[torch.Tensor]  # (K, out, in)
    out_bias: torch.Tensor  # (K, 1): the one-unit output layer's bias

    @classmethod
    def of(cls, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> Layers:
        return cls(weights, biases, [weight.transpose(1, 2) for weight in weights], biases[-1].squeeze(-1))


class Stack:
    """K members of one family as one model: every parameter of member k lives in row k of `flat`.

    One flat (K, P) tensor per stack, with each layer's weights and biases as views into it, lets
    an optimizer update all members and all layers in a handful of tensor operations. `trainable`
    marks the entries that belong to a member (0 on padding), or is None when nothing is padded.
    """

    def __init__(
        self, specs: list[ModelSpec], n_features: int, generators: list[torch.Generator], device: str = "cpu"
    ) -> None:
        families = {spec.family for spec in specs}
        feature_sets = {spec.terms for spec in specs}
        if len(families) != 1 or len(feature_sets) != 1:
            raise ValueError(f"a stack holds one family and one feature set, got {families}, {len(feature_sets)} sets")
        self.specs = list(specs)
        self.n_features = n_features
        self.terms = specs[0].terms
        self.variables = specs[0].inputs(n_features)
        self.log_inputs = specs[0].log_inputs
        self.affine: Affine | None = None  # the standardisation the members train under, if any
        depth = max(len(spec.hidden) for spec in specs)
        width = max((max(spec.hidden) for spec in specs if spec.hidden), default=0)
        self.shapes = layer_shapes(ModelSpec(specs[0].family, self.terms, depth, width), n_features)
        size = sum(n_in * n_out + n_out for n_in, n_out in self.shapes)
        self.flat = torch.zeros(len(specs), size)
        self.trainable = torch.zeros(len(specs), size)
        for k, (spec, generator) in enumerate(zip(specs, generators, strict=True)):
            self._place(k, spec, init_layers(spec, n_features, generator))
        # Zero-padded units get zero gradients and stay zero; only identity layers must be frozen.
        if all(len(spec.hidden) == depth for spec in specs):
            self.trainable = None
        self.flat = self.flat.to(device)
        self.trainable = None if self.trainable is None else self.trainable.to(device)

    def _place(self, k: int, spec: ModelSpec, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy a member's own layers into row k; pad the rest (zero units, identity layers)."""
        weights, biases = self.layer_views(self.flat[k : k + 1])
        masks, bias_masks = self.layer_views(self.trainable[k : k + 1])
        real = len(layers) - 1  # the member's hidden layers; the last one is its output layer
        for index, (weight, bias) in enumerate(layers[:-1]):
            weights[index][0, : weight.shape[0], : weight.shape[1]] = weight
            biases[index][0, 0, : bias.shape[0]] = bias
            masks[index][0, : weight.shape[0], : weight.shape[1]] = 1
            bias_masks[index][0, 0, : bias.shape[0]] = 1
        for index in range(real, len(self.shapes) - 1):  # frozen identity on the member's width
            size = spec.width
            weights[index][0, :size, :size] = torch.eye(size)
        weight, bias = layers[-1]
        weights[-1][0, : weight.shape[0], :] = weight
        biases[-1][0, 0, :] = bias
        masks[-1][0, : weight.shape[0], :] = 1
        bias_masks[-1][0, 0, :] = 1

    def layer_views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Weights (K, in, out) and biases (K, 1, out) as views of a (K, P) tensor."""
        weights, biases, offset = [], [], 0
        rows = flat.shape[0]
        for n_in, n_out in self.shapes:
            weights.append(flat[:, offset : offset + n_in * n_out].view(rows, n_in, n_out))
            offset += n_in * n_out
            biases.append(flat[:, offset : offset + n_out].view(rows, 1, n_out))
            offset += n_out
        return weights, biases

    def __len__(self) -> int:
        return self.flat.shape[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return features(logged(x, self.variables, self.log_inputs), self.terms, self.variables)

    def layers(self, flat: torch.Tensor) -> Layers:
        """The layers of `flat` as the training step reads them (views, valid while `flat` is)."""
        return Layers.of(*self.layer_views(flat))

    @staticmethod
    def forward(layers: Layers, x: torch.Tensor, inputs: list | None = None) -> torch.Tensor:
        """x (K, B, in) of features -> predictions (K, B). `inputs` collects each layer's input for `backward`."""
        hidden = x
        for weight, bias in zip(layers.weights[:-1], layers.biases[:-1], strict=True):
            if inputs is not None:
                inputs.append(hidden)
            hidden = torch.baddbmm(bias, hidden, weight).relu_()
        if inputs is not None:
            inputs.append(hidden)
        # The output layer has one unit: a dot product per row, which beats a batch of K one-column
        # matrix products from about K = 10 on (up to 4x on the backward pass).
        return torch.linalg.vecdot(hidden, layers.transposed[-1]) + layers.out_bias

    @staticmethod
    def backward(layers: Layers, inputs: list[torch.Tensor], d_prediction: torch.Tensor, grad: torch.Tensor) -> None:
        """Write into `grad` (K, P, laid out as `flat`) the gradient of sum(d_prediction * prediction).

        Written out rather than left to autograd: the graph of a few tiny products costs more to
        record and walk than the products themselves (about half of a step alone).
        """
        delta = d_prediction.unsqueeze(-1)  # (K, B, out) gradient at the current layer's output
        # The one-unit output layer by broadcasting, as in `forward`. Pieces are (K, size) each.
        pieces = [delta.sum(1), (inputs[-1] * delta).sum(1)]  # bias, weight gradients, last first
        if len(layers.weights) > 1:
            delta = (delta * layers.transposed[-1]).mul_(inputs[-1].sign())  # ReLU'(h) is sign(h), h >= 0
        for layer in range(len(layers.weights) - 2, -1, -1):
            weight_grad = torch.bmm(inputs[layer].transpose(1, 2), delta)
            pieces += [delta.sum(1), weight_grad.view(weight_grad.shape[0], -1)]
            if layer:  # back through the weights, then through the ReLU whose output was the input here
                delta = torch.bmm(delta, layers.transposed[layer])
                delta.mul_(inputs[layer].sign())
        torch.cat(pieces[::-1], dim=1, out=grad)

    def keep(self, rows: list[int]) -> None:
        """Drop every member not in `rows` (finished, pruned or diverged): less work per step."""
        index = torch.tensor(rows, device=self.flat.device)
        self.flat = self.flat.index_select(0, index)
        self.trainable = None if self.trainable is None else self.trainable.index_select(0, index)
        self.specs = [self.specs[k] for k in rows]

    def export(self, k: int) -> nn.Module:
        """Member k as a standalone model of its own size, on the CPU."""
        spec = self.specs[k]
        weights, biases = self.layer_views(self.flat[k : k + 1].detach().cpu())
        own = layer_shapes(spec, self.n_features)
        picked = list(range(len(own) - 1)) + [len(self.shapes) - 1]  # its hidden layers, then the output
        linears = [
            (weights[index][0, :n_in, :n_out].T.clone(), biases[index][0, 0, :n_out].clone())
            for index, (n_in, n_out) in zip(picked, own, strict=True)
        ]
        if self.affine is not None:
            linears = self.affine.fold(linears)
        model = build_model(spec, self.n_features)
        with torch.no_grad():
            for layer, (weight, bias) in zip(model.linear_layers(), linears, strict=True):
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
        return model.eval()


class LinearModel(nn.Module):
    """y = w . features(x) + b, where features are the raw inputs plus optional named terms."""

    def __init__(self, n_features: int, terms: tuple[str, ...] = (), variables: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.n_features = n_features
        self.terms = tuple(terms)
        self.variables = tuple(variables) or shorthand(n_features)
        self.linear = nn.Linear(n_features + len(self.terms), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(features(x, self.terms, self.variables)).squeeze(-1)

    def linear_layers(self) -> list[nn.Linear]:
        return [self.linear]

    def feature_names(self) -> list[str]:
        return list(self.variables) + list(self.terms)

    def coefficients(self) -> dict[str, float]:
        """Learned weight per feature name, plus the bias under the key '1'."""
        weights = self.linear.weight.detach().cpu().double().squeeze(0).tolist()
        table = dict(zip(self.feature_names(), weights, strict=True))
        table[library.CONSTANT] = float(self.linear.bias.detach().cpu().double().item())
        return table

    def set_coefficients(self, table: dict[str, float]) -> None:
        """Replace every weight by `table`'s (a feature it does not name gets 0)."""
        with torch.no_grad():
            weights = [table.get(name, 0.0) for name in self.feature_names()]
            self.linear.weight.copy_(torch.tensor([weights], dtype=self.linear.weight.dtype))
            self.linear.bias.fill_(table.get(library.CONSTANT, 0.0))


class MLP(nn.Module):
    def __init__(self, n_features: int, depth: int, width: int, variables: tuple[str, ...] = (),
                 log_inputs: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__()
        self.n_features = n_features
        self.variables = tuple(variables) or shorthand(n_features)
        self.log_inputs = tuple(log_inputs)
        layers: list[nn.Module] = []
        size = n_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(logged(x, self.variables, self.log_inputs)).squeeze(-1)

    def linear_layers(self) -> list[nn.Linear]:
        return [layer for layer in self.net if isinstance(layer, nn.Linear)]


def build_model(spec: ModelSpec, n_features: int) -> nn.Module:
    if spec.family == "linear":
        return LinearModel(n_features, (), spec.variables)
    if spec.family == "cross":
        return LinearModel(n_features, spec.terms, spec.variables)
    if spec.family == "mlp":
        return MLP(n_features, spec.depth, spec.width, spec.variables, spec.log_inputs)
    raise ValueError(f"unknown model family {spec.family!r}; expected linear, cross or mlp")
