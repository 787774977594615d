"""Can a neural network solve linear and nonlinear equations? The experiment as a pipeline.

`pipeline/stages/` holds the pipeline's steps (what dvc.yaml, the CLI and the Prefect flows run);
the modules beside it are the library, one concern each (see docs/architecture.md). Nothing is
imported here at start-up: a stage's process loads only the modules it runs.

    import pipeline
    model = pipeline.load_model("models:/equations-product@champion")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def load_model(uri: str, tracking_uri: str | None = None) -> nn.Module:
    """A logged model rebuilt from its spec, its files checked against the SHA-256 recorded when it
    was logged, its weights read without pickle. See `pipeline.loading`."""
    from pipeline.loading import load_model as load

    return load(uri, tracking_uri)
