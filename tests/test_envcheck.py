"""The install check refuses a CUDA torch on a machine without a GPU."""

import torch

from anatcl_core.envcheck import torch_build_problem


def test_cuda_build_without_gpu_is_refused():
    assert "no GPU" in torch_build_problem("12.8", gpu_available=False)
    assert torch_build_problem("12.8", gpu_available=True) is None
    assert torch_build_problem(None, gpu_available=False) is None


def test_installed_torch_suits_this_machine():
    assert torch_build_problem(torch.version.cuda, torch.cuda.is_available()) is None
