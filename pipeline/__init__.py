"""Can a neural network solve linear and nonlinear equations? The experiment as a pipeline.

Modules, one concern each: equations (safe parsing), data, models, train (the one loop),
tune (Optuna), tracking (MLflow), reference (closed-form optima, true coefficients), report,
config (params.yaml), stages (the pipeline's steps), cli.
"""
