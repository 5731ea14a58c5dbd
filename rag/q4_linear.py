"""4-bit linear layers for decoding on the CPU, for models that come from Q4 GGUF files.

Decoding one token reads every weight once, so on a CPU its speed is set by the bytes it
reads. The bundled model's linear layers are GGUF ``Q4_1`` blocks: 32 weights that share a
scale and a minimum. The converted cache holds them de-quantized to float32, eight times the
bytes. torch has a CPU kernel for exactly this layout (``_weight_int4pack_mm_for_cpu``: groups
of 32 along the input, a scale and a zero per group), so single-token steps can run on the
file's own 4-bit weights, recovered from the float32 copy without loss, while prompts (many
tokens at once) use a bfloat16 copy on the CPU's bfloat16 matrix units.

Only layers whose weights are exactly such blocks are replaced; any other model is left alone.

    >>> layout = recover_q4_layout(float32_model)  # once, then keep it:
    >>> save_q4_layout(layout, folder / "q4_layout.safetensors")
    >>> load_q4_layout(bfloat16_model, folder / "q4_layout.safetensors")  # later loads
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

GROUP = 32  # GGUF Q4_0/Q4_1 block size; also a group size torch's int4 kernel accepts
LEVELS = 15  # 4 bits: 0..15
DECODE_ROWS = 4  # inputs of at most this many tokens use the 4-bit kernel


def cpu_has_bf16() -> bool:
    """True where bfloat16 matrix kernels are fast (AVX512-BF16 or AMX); elsewhere they are slow."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def q4_blocks(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(levels, scales, minimums)`` if ``weight`` is exactly Q4_1 blocks along its rows, else None.

    In a Q4_1 block the smallest weight is the minimum and the largest is level 15, so both are
    read off the block; the check then rebuilds every weight and demands the same value.
    """
    out_features, in_features = weight.shape
    if in_features % GROUP:
        return None
    blocks = weight.detach().float().reshape(out_features, in_features // GROUP, GROUP)
    low, high = blocks.amin(-1), blocks.amax(-1)
    scales = (high - low) / LEVELS
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    levels = torch.round((blocks - low[..., None]) / safe[..., None]).clamp_(0, LEVELS)
    rebuilt = levels * scales[..., None] + low[..., None]
    tolerance = 1e-5 * (high - low).clamp(min=1e-12)[..., None]
    if not bool(((rebuilt - blocks).abs() <= tolerance).all()):
        return None
    return levels.reshape(out_features, in_features).to(torch.int32), scales, low


class Q4DecodeLinear(nn.Module):
    """A bias-free linear layer: 4-bit kernel for a few tokens, bfloat16 matmul for many."""

    def __init__(self, weight: torch.Tensor, levels: torch.Tensor, scales: torch.Tensor, low: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
        # Plain attributes, not buffers: ``model.to(dtype)`` must not cast the packed layout.
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(levels.to(torch.int32), 1)
        zeros = low + scales * ((LEVELS + 1) // 2)  # the kernel computes (level - 8) * scale + zero
        self.scales_and_zeros = torch.stack([scales, zeros], -1).transpose(0, 1).contiguous().to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > DECODE_ROWS:
            return nn.functional.linear(x, self.weight.to(x.dtype))
        flat = x.reshape(rows, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales_and_zeros)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


def _q4_candidates(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Linear]]:
    """Bias-free linear layers that do not share the input embedding (GGUF keeps that 8-bit)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    shared = getattr(embeddings, "weight", None)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.bias is None and child.weight is not shared:
                yield f"{parent_name}.{name}".lstrip("."), parent, name, child


def recover_q4_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """The 4-bit layout of every exact-Q4 linear layer of a float32 model (two levels per byte).

    The recovery must see the de-quantized float32 values unrounded; the result is empty when
    no layer is exact Q4.
    """
    layout: dict[str, torch.Tensor] = {}
    for full_name, _, _, child in _q4_candidates(model):
        blocks = q4_blocks(child.weight)
        if blocks is not None:
            levels, scales, low = blocks
            layout[f"{full_name}.levels"] = (levels[:, 0::2] | (levels[:, 1::2] << 4)).to(torch.uint8)
            layout[f"{full_name}.scales"] = scales
            layout[f"{full_name}.low"] = low
    return layout


def apply_q4_layout(model: nn.Module, layout: dict[str, torch.Tensor]) -> int:
    """Swap the layers named in ``layout`` for ``Q4DecodeLinear``, in place; returns how many."""
    swapped = 0
    for full_name, parent, name, child in _q4_candidates(model):
        packed = layout.get(f"{full_name}.levels")
        if packed is None:
            continue
        levels = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(child.weight.shape)
        scales, low = layout[f"{full_name}.scales"], layout[f"{full_name}.low"]
        setattr(parent, name, Q4DecodeLinear(child.weight, levels, scales, low))
        swapped += 1
    if swapped:
        logger.info("4-bit CPU decoding for %d linear layers", swapped)
    return swapped


def save_q4_layout(layout: dict[str, torch.Tensor], path: Path) -> None:
    """Keep the recovered 4-bit layout next to a bfloat16 copy of the model."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in layout.items()}, str(path))


def load_q4_layout(model: nn.Module, path: Path) -> int:
    """Swap the layers named in a saved layout for ``Q4DecodeLinear``; returns how many."""
    from safetensors.torch import load_file

    return apply_q4_layout(model, load_file(str(path)))
