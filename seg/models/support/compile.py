"""A network compiled for inference by ``torch.compile`` (Inductor) with freezing: parameters treated as
constants, so BatchNorms and transposes fold away and oneDNN's convolution weights are packed once, not per call.

On a 2-core EPYC with AVX-512 BF16 a compiled CamVid network runs 1.25x its eager self in fp32 and 1.3-1.9x
under bf16 autocast (benchmarks/RESULTS.md, sections 23, 25 and 26), once compiled: compiling takes tens of
seconds per input shape, so it pays off over thousands of frames of one size (a video), not a folder of images.
The compiled module runs only without gradients (``torch.no_grad`` / ``torch.inference_mode``), and recompiles
for every new input shape (``dynamic=False``: a fixed shape is what makes freezing's constant folding pay).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["compile_for_inference"]


def compile_for_inference(net: nn.Module) -> nn.Module:
    """``net`` (in eval mode) compiled by Inductor with freezing, for a fixed input shape; compiles on first call."""
    return torch.compile(net.eval(), dynamic=False, options={"freezing": True})
