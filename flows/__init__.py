"""Prefect 3 flows over the pipeline's stages; `python -m flows.serve` serves the deployments."""
