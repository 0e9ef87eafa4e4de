"""Fresh CPU outputs of 4 MB or more are advised to transparent huge pages (csrc/cpu/fresh_output.h).

The advice is a hint the kernel may not act on (no free 2 MB page at the time), so the test checks that it
was given: the mapping that holds the output carries the `hg` (MADV_HUGEPAGE) flag in /proc/self/smaps.
"""

from __future__ import annotations

import os

import pytest
import torch

import mint  # noqa: F401  (loads the extension)

ops = torch.ops.mint

THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def vm_flags_at(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that contains address."""
    inside = False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    return []


def thp_available() -> bool:
    try:
        with open(THP) as fh:
            return "[never]" not in fh.read()
    except OSError:
        return False


@pytest.mark.skipif(not thp_available(), reason="no transparent huge pages on this kernel")
def test_large_expand_output_is_advised_to_huge_pages():
    t, d_out, rank = 1100, 9000, 8  # a 39.6 MB fp32 output: above glibc's mmap threshold, so a fresh mapping
    y = torch.randn(t, d_out)
    h = torch.randn(t, rank)
    b = torch.randn(1, rank, d_out)
    out = ops.lora_expand(y, h, b, torch.tensor([0, t]), torch.tensor([0]), torch.tensor([rank]),
                          torch.tensor([0.5]))
    torch.testing.assert_close(out, y + 0.5 * h @ b[0])
    middle = out.data_ptr() + out.nbytes // 2
    assert "hg" in vm_flags_at(middle)
    if not os.environ.get("THP_MEM_ALLOC_ENABLE"):  # torch's own allocations carry no advice by default
        assert "hg" not in vm_flags_at(y.data_ptr() + y.nbytes // 2)
