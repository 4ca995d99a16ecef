"""Tests run PyTorch on one thread (tests/conftest.py says why), here and in the processes they start."""

import subprocess
import sys


def test_torch_uses_one_thread_in_tests_and_their_subprocesses() -> None:
    import torch

    assert torch.get_num_threads() == 1
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "1"
