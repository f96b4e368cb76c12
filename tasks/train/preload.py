"""What the forkserver imports once, so the search's trial workers start warm.

With `search.preload_workers` (on by default), a local single-process trial's worker is not a
fresh `python -m tasks.train.worker` but a process forked from Python's multiprocessing
forkserver, which imported this module when it started (`tasks.train.launch`). A fresh
interpreter spends 5-7 s on these imports; a fork from the forkserver inherits them.

CUDA cannot be used in a child forked from a process that initialised it, and importing
bitsandbytes (which peft and transformers' Trainer import) initialises CUDA to read the GPU's
compute capability. So on a torch built with CUDA or ROCm only torch itself is preloaded (its
import does not touch the GPU) and each trial imports the rest; on a CPU build of torch no GPU
can be used, and everything the worker needs is preloaded.
"""

from __future__ import annotations

import torch

GPU_BUILD = torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None

if not GPU_BUILD:
    import optuna  # noqa: F401 - the pruning callback's

    import tasks.train.fit  # noqa: F401 - torch, transformers, peft, bitsandbytes
