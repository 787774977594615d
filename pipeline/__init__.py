"""Can a neural network solve linear and nonlinear equations? The experiment as a pipeline.

Modules, one concern each: equations (safe parsing), data, models, train (the one loop),
tune (Optuna), tracking (MLflow), stores (opening them safely), liveness (who owns a run),
loading (logged models back, without pickle), reference (closed-form optima, true coefficients),
report, config (params.yaml), stages (the pipeline's steps), cli.

    import pipeline
    model = pipeline.load_model("models:/equations-product@champion")
"""


def load_model(uri: str, tracking_uri: str | None = None):
    """A logged model rebuilt from its spec, its files checked against the SHA-256 recorded when it
    was logged, its weights read without pickle. See `pipeline.loading`."""
    from pipeline.loading import load_model as load

    return load(uri, tracking_uri)
