"""The model families, simplest first, and the one rule for which is best on a dataset: the
report's verdicts and the registry's champions both use `best_family`."""

FAMILIES = ("linear", "cross", "mlp")  # simplest first: in a tie the simpler family wins


def reaches_floor(m: dict) -> bool:
    """Within 10 % of the noise floor, or within 1e-6 of it when there is no noise."""
    return m["excess"] <= 0.1 * m["floor_mse"] + 1e-6


def best_family(by_model: dict[str, dict]) -> str:
    """The one rule for "best", used by the report's verdicts and by champion promotion: the simplest
    family (linear, cross, mlp) that reaches the noise floor; if none does, the lowest val_mse."""
    families = [f for f in FAMILIES if f in by_model]
    reached = [f for f in families if reaches_floor(by_model[f])]
    return reached[0] if reached else min(families, key=lambda f: by_model[f]["val_mse"])
