import os
import time

import pytest
import torch


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial statistics and affine params so fusion errors cannot hide behind identity BN."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 2 - 1)
    return model


@pytest.fixture
def bn_randomizer():
    return randomize_bn


@pytest.fixture
def wait_for_child():  # noqa: ANN201
    """``wait(pid, what)``: waits up to 30 s for a forked child, kills it and fails naming ``what`` if it hangs,
    and asserts it exited 0."""

    def wait(pid: int, what: str) -> None:
        for _ in range(300):
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(what)
        assert os.waitstatus_to_exitcode(status) == 0

    return wait
