"""The pipeline's steps, one module each, over the library; dvc.yaml and the Prefect flows both run them.

DVC stages: `validate`, `generate`, `tune`, `compare`. Commands beside them: `promote`, `cleanup`,
`predict`, `worker`. Each module has the step's function (what a flow task calls, with validated
params and caller-given paths) and its command line (`add_arguments`, `main`), and imports only
what the step runs, so that dvc.yaml can list exactly the code each stage depends on. These
modules, with `specs`, are the only code that reads the typed params; the library below takes
plain values and small records.
"""
