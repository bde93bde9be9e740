"""The process's global generators (torch's, Python's, NumPy's), saved in a training checkpoint and
restored on resume, so that user code drawing from them (a custom data transform, say) gets the
randomness an uninterrupted run would have given it. The project's own draws never use them
(:mod:`ddpm.rng`)."""

from __future__ import annotations

import numpy as np
import torch


def global_rng_state() -> dict:
    """The global generators' states (torch as a ByteTensor, Python's and NumPy's as JSON-ready
    values), so that a resumed run leaves user code the randomness it would have had."""
    import random

    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_global_rng_state(state: dict) -> None:
    """Restore what :func:`global_rng_state` returned (any part may be missing)."""
    import ast
    import random

    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(ast.literal_eval(state["python"]))
    if "numpy" in state:
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
