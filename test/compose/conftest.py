"""test/compose: the GPC core's tests run torch with ONE intra-op thread.

Their tensors are small; on this 2-core machine, while other suites run, OpenMP's spinning worker threads made
one 48k-element DDPM test 20-40x slower (8-16 s instead of 0.4 s). One thread per test is faster and steadier.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
