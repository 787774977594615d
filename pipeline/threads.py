"""How many threads a process's math libraries run: torch's own, and the BLAS and OpenMP under numpy.

A process here shares the machine with others that compute (a tuning's trainer beside its recorder,
two tunings of a table side by side), so a second thread of any library only takes a core from
another process, and OpenBLAS's threads spin between calls: the recorder's least squares on an
820-term library used two cores' CPU for one core's speed and slowed the trainer beside it (one
tuning of all three families, II_36_38, before and after alternating, medians of three: 37.7 s of
wall time and 59.6 s of CPU before, 35.1 s and 55.0 s with one thread; the same numbers). The
libraries read their thread counts once, when loaded, and a spawned process has usually loaded numpy
before its own code runs (its parent's main module is imported again first), so the counts are set
on the libraries loaded already as well as for those loaded later.
"""

from __future__ import annotations

import os
import sys


def limit(threads: int) -> None:
    """Run at most `threads` threads in torch, OpenBLAS and OpenMP in this process, from now on."""
    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = str(threads)  # libraries loaded from now on (torch among them)
    threadpool_limits(threads)  # those loaded already (the BLAS under numpy, an OpenMP runtime)
    if (torch := sys.modules.get("torch")) is not None:
        torch.set_num_threads(threads)
