"""PyTorch's private corners, all in this module: what its public API cannot do for us yet.

Tested against torch 2.13 (pyproject pins `torch==2.13.0`); `tests/test_private_apis.py` fails
loudly if a name used here disappears, and checks that it moves parameters exactly as the public
functional AdamW (`torch.optim.adamw.adamw(..., fused=True)`) does.

- `adam_direction`: one step of PyTorch's fused AdamW kernel (`torch._fused_adamw_`). The public
  functional `adamw(..., fused=True)` runs the same kernel behind a Python layer that groups the
  tensors by device and dtype and counts the step with a `_foreach_add_`: for the one tensor of a
  stack, that layer cost 2.5 times the kernel itself (about 30 us of a training step of 300-400 us
  on this project's 2-core machine). Would be replaced by a public fused AdamW step on given
  tensors without the grouping.
"""

from __future__ import annotations

import functools

import torch


def adam_direction(
    scratch: torch.Tensor,
    grad: torch.Tensor,
    moments: tuple[torch.Tensor, torch.Tensor],
    steps: torch.Tensor,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """Count one more step in `steps` and move `scratch` by minus AdamW's direction (learning rate
    1, no weight decay), updating the first and second `moments` in place, as `adamw(fused=True)`."""
    steps.add_(_one(steps.dtype, steps.device))  # a Python 1 would be made into a tensor first, at every step
    torch._fused_adamw_(
        [scratch],
        [grad],
        [moments[0]],
        [moments[1]],
        [],
        [steps],
        lr=1.0,
        beta1=betas[0],
        beta2=betas[1],
        weight_decay=0.0,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )


@functools.cache
def _one(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor, though the first call may come in inference mode
        return torch.ones((), dtype=dtype, device=device)
