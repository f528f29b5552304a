"""A network compiled for inference by ``torch.compile`` (Inductor) with freezing: parameters treated as
constants, so BatchNorms and transposes fold away and oneDNN's convolution weights are packed once, not per call.

On a 2-core EPYC with AVX-512 BF16 a compiled CamVid network runs 1.2x its eager self in fp32 and 1.35x under
bf16 autocast (2.0x eager fp32; benchmarks/RESULTS.md, sections 23, 25 and 26), once compiled: compiling takes
10-30 s per input shape, so it pays off over thousands of frames of one size (a video), not a folder of images.
The compiled module runs only without gradients (``torch.no_grad`` / ``torch.inference_mode``), and recompiles
for every new input shape (``dynamic=False``: a fixed shape is what makes freezing's constant folding pay).

Freezing is Inductor's global switch (``torch._inductor.config.freezing``), read by Dynamo when it traces as well
as by Inductor, so it is switched on around each call of the compiled net, not process-wide (a process that also
trains would otherwise freeze the weights of its compiled validation) and not through ``torch.compile``'s
``options`` (those reach Inductor only: a PT2E-quantised net then fails to compile).
"""

from __future__ import annotations

import torch
import torch._inductor.config as inductor_config
from torch import Tensor, nn

__all__ = ["FrozenCompiled", "compile_for_inference"]


class FrozenCompiled(nn.Module):
    """``net`` compiled by Inductor with freezing; any other attribute is ``net``'s (``input_mean``, say)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.compiled = torch.compile(net, dynamic=False)

    def forward(self, x: Tensor) -> Tensor:
        with inductor_config.patch(freezing=True):
            return self.compiled(x)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)


def compile_for_inference(net: nn.Module) -> nn.Module:
    """``net`` compiled by Inductor with freezing, for a fixed input shape; compiles on first call. ``net`` must be
    in eval mode already (an exported program, e.g. a PT2E-quantised one, has no ``eval()`` of its own)."""
    return FrozenCompiled(net)
