import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
