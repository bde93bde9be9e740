"""Keeping freed memory: glibc stops faulting a CPU step's memory in afresh, the user's own malloc
settings stand, and what a command draws does not change."""

import json
import platform
import subprocess
import sys

import numpy as np
import pytest

from ddpm.allocator import KEEP_BYTES, keep_freed_memory
from ddpm.cli import main

from .conftest import subprocess_env

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc only")

FAULTS = """
import json, resource, sys, torch
from ddpm.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else 0
faults = []
for _ in range(9):  # a step's activations: freed, then asked for again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.empty(12 << 20)  # 48 MiB
    a.fill_(1.0)
    del a
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], check=True, capture_output=True, text=True,
                         env=subprocess_env()).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    pages = (48 << 20) // 4096
    assert kept["kept"] == KEEP_BYTES
    assert np.median(default["faults"][1:]) > pages // 2  # glibc unmaps each 48 MiB block and maps it afresh
    assert np.median(kept["faults"][1:]) < pages // 10, kept  # kept: the same pages again (once in a while,
    # when other blocks came between, the heap grows and new pages fault in)


def test_the_users_own_malloc_settings_stand():
    for env in ({"DDPM_KEEP_FREED_MEMORY": "0"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
                {"MALLOC_MMAP_THRESHOLD_": "65536"}, {"MALLOC_TRIM_THRESHOLD_": "0"}):
        assert keep_freed_memory(env) == 0, env


def test_what_a_command_draws_does_not_depend_on_it(tmp_path):
    argv = ["sample", "--checkpoint", "pretrained:mnist-cond", "--class", "all", "--steps", "5", "--n", "3",
            "--seed", "1", "--quiet", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "kept.npz")]) == 0  # main() keeps freed memory
    code = "import sys; from ddpm.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**subprocess_env(), "DDPM_KEEP_FREED_MEMORY": "0"}
    subprocess.run([sys.executable, "-c", code, *argv, "--out", str(tmp_path / "default.npz")], check=True, env=env,
                   capture_output=True)
    kept, default = np.load(tmp_path / "kept.npz"), np.load(tmp_path / "default.npz")
    assert np.array_equal(kept["arr_0"], default["arr_0"]) and np.array_equal(kept["arr_1"], default["arr_1"])
