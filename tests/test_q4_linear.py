"""4-bit CPU decoding: exact recovery of Q4_1 blocks, the layer's output, and the saved layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rag.q4_linear import (
    GROUP,
    Q4DecodeLinear,
    apply_q4_layout,
    cpu_has_bf16,
    load_q4_layout,
    q4_blocks,
    recover_q4_layout,
    save_q4_layout,
)

needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bfloat16 units")


def q4_1_weight(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    """What de-quantizing a GGUF Q4_1 tensor gives: per block of 32, minimum + level * scale."""
    generator = torch.Generator().manual_seed(seed)
    blocks = in_features // GROUP
    levels = torch.randint(0, 16, (out_features, blocks, GROUP), generator=generator).float()
    levels[..., 0], levels[..., 1] = 0, 15  # ggml puts the block's minimum at 0 and maximum at 15
    scales = torch.rand(out_features, blocks, 1, generator=generator) * 0.02 + 1e-3
    low = -torch.rand(out_features, blocks, 1, generator=generator) * 0.2
    return (levels * scales + low).reshape(out_features, in_features)


class TwoLayers(nn.Module):
    def __init__(self, first: torch.Tensor, second: torch.Tensor) -> None:
        super().__init__()
        self.up = nn.Linear(first.shape[1], first.shape[0], bias=False)
        self.down = nn.Linear(second.shape[1], second.shape[0], bias=False)
        self.up.weight.data, self.down.weight.data = first.clone(), second.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def test_q4_blocks_are_recovered_exactly() -> None:
    weight = q4_1_weight(64, 128)
    levels, scales, low = q4_blocks(weight)
    rebuilt = (levels.reshape(64, 4, GROUP) * scales[..., None] + low[..., None]).reshape(64, 128)
    assert torch.allclose(rebuilt, weight, rtol=0, atol=1e-6)  # float rounding of the recovered scale only
    assert levels.min() >= 0 and levels.max() <= 15


@pytest.mark.parametrize(
    "weight",
    [torch.randn(64, 128), torch.randn(64, 100)],  # ordinary float weights; a width that is not blocks of 32
    ids=["float", "ragged"],
)
def test_other_weights_are_not_taken_for_q4(weight: torch.Tensor) -> None:
    assert q4_blocks(weight) is None


@needs_bf16
def test_layer_matches_float32_for_one_token_and_for_many() -> None:
    weight = q4_1_weight(96, 256)
    layer = Q4DecodeLinear(weight, *q4_blocks(weight))
    for rows in (1, 40):  # one decoding step uses the 4-bit kernel; a prompt uses the bfloat16 copy
        x = torch.randn(1, rows, 256)
        expected = x @ weight.T
        got = layer(x)
        assert got.shape == expected.shape and got.dtype == x.dtype
        assert torch.allclose(got, expected, rtol=0.02, atol=0.02 * expected.abs().max().item())


@needs_bf16
def test_only_q4_layers_are_swapped_and_the_layout_reloads(tmp_path: Path) -> None:
    model = TwoLayers(q4_1_weight(64, 128), torch.randn(32, 64))
    x = torch.randn(1, 1, 128)
    layout = recover_q4_layout(model)
    apply_q4_layout(model, layout)
    assert isinstance(model.up, Q4DecodeLinear) and type(model.down) is nn.Linear
    expected = model(x)

    save_q4_layout(layout, tmp_path / "layout.safetensors")
    fresh = TwoLayers(q4_1_weight(64, 128), model.down.weight.data)
    assert load_q4_layout(fresh, tmp_path / "layout.safetensors") == 1
    assert isinstance(fresh.up, Q4DecodeLinear)
    assert torch.equal(fresh(x), expected)


def test_a_model_without_q4_weights_is_left_alone() -> None:
    model = TwoLayers(torch.randn(64, 128), torch.randn(32, 64))
    layout = recover_q4_layout(model)
    apply_q4_layout(model, layout)
    assert layout == {}
    assert type(model.up) is nn.Linear and type(model.down) is nn.Linear
