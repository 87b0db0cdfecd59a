"""Freed host memory stays in the process on CPU runs, so each training step's large tensors
(the logits) do not go back to the OS and fault in, zeroed, again. The allocator setting is
process-wide, so it is measured in a child process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests._bins_fixture import child_env

# Allocate, touch, free and allocate again a block 4x glibc's largest mmap threshold, as a
# training step does with its logits; count the page faults of the second allocation.
CHILD = r"""
import ctypes, resource, sys
from finegpt_pipeline.train import allocator
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 128 * 2**20
def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
faults_of_a_step()
print(faults_of_a_step())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the setting is glibc's; elsewhere keep_freed_memory is a no-op")
def test_a_freed_large_block_is_reused_without_faulting_pages_in_again():
    pages = 128 * 2**20 // 4096

    def faults(mode: str) -> int:
        proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                              env=child_env(), timeout=60)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout)

    assert faults("default") > pages // 2  # glibc's default: every page faults in again
    assert faults("keep") < pages // 100  # kept: the second step reuses the first's pages


def test_a_no_op_off_linux(monkeypatch):
    from finegpt_pipeline.train import allocator

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
