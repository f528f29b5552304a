"""Yu & Koltun 2016 ("Multi-Scale Context Aggregation by Dilated Convolutions", arXiv:1511.07122) context module.

The basic module works on C class-score maps: 3x3xC convolutions with exponentially growing dilation, each
followed by max(., 0), then a 1x1xC convolution. Here it follows a dilated backbone front end whose FCN head
produces the scores (the paper's front end is VGG-16; see :class:`seg.models.vgg.VGGDilated`, ``context=True``).
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from seg.models.fcn_head import FCNHead
from seg.models.segmenter import Segmenter

BASIC_DILATIONS = (1, 1, 2, 4, 8, 16, 1)  # Table 1: receptive field 3, 5, 9, 17, 33, 65, 67 after each layer


class ContextModule(nn.Sequential):
    """The basic context module: C -> C channels at every layer, identity-initialised (Sec. 3).

    At initialisation it maps x to max(x, 0): each 3x3 layer passes its input through unchanged and the
    truncation clips negatives, as in the paper; the final 1x1 layer is the identity too.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = BASIC_DILATIONS):
        layers: list[nn.Module] = []
        for d in dilations:
            layers += [nn.Conv2d(channels, channels, 3, padding=int(d), dilation=int(d)), nn.ReLU()]
        layers.append(nn.Conv2d(channels, channels, 1))
        super().__init__(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Identity initialisation k^b(t, a) = 1[t=0] 1[a=b]: random init fails to train the module (Sec. 3)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                centre = m.kernel_size[0] // 2
                m.weight[:, :, centre, centre] = torch.eye(m.out_channels, m.in_channels)
                m.bias.zero_()


class ContextNet(Segmenter):
    """A dilated backbone front end (output stride 8) + FCN score head + context module; contract of DeepLabV3.

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out"}, plus "front_end" (the front
    end's own scores, the context module's input) when ``supervise_front_end`` and "aux" (an FCN head on the "aux"
    features, as in every segmenter) when ``aux``, all upsampled to the input size.

    The paper trains the front end first and adds the module afterwards. Trained jointly from scratch, a class
    whose scores turn negative everywhere early is cut off by the module's truncations for good (on the
    quickstart data, three of four shape classes stayed at IoU 0). So for the first `front_end_steps` optimizer
    steps the module is left out of training and "out" is the front end's scores. The clock is optimizer steps, not
    forward calls (``trainer.accumulate_grad_batches`` does not change its meaning): whoever steps the optimizer
    calls :meth:`optimizer_stepped` after each step (``SegModule.optimizer_step`` does). The count is the buffer
    `batches_trained` (batches in the optimizer's sense; the name kept for older checkpoints), like BatchNorm's
    `num_batches_tracked`, so it is saved in checkpoints and a resumed run continues in the right stage.

    Args:
        num_classes: output channels (and the context module's width: it works on class scores).
        backbone: a backbone name or a built backbone, as :class:`Segmenter`.
        output_stride: 8, the paper's front end (16 or 32 also build).
        multi_grid: ResNet only: layer4's unit rates, times its dilation (DeepLabv3 Sec. 3.2); None: all 1.
        weights: the backbone's ImageNet weights (``imagenet``, a local file, a torchvision enum name, an installed
            weights package); None: random init. Loaded strictly.
        in_channels: input bands (3: RGB); others rebuild the first convolution, its RGB kernels adapted.
        input_mean: per-band mean of the 0-1 scaled inputs, needed when ``in_channels`` is not 3 (then
            ``input_std`` too); None: what the backbone's weights expect.
        input_std: per-band standard deviation, as ``input_mean``.
        dilations: the module's 3x3 layers' dilations (Table 1, basic: 1, 1, 2, 4, 8, 16, 1).
        aux: an FCN auxiliary head on the "aux" features, as in every segmenter.
        supervise_front_end: also train the front end's own scores (output "front_end"), weighted by
            ``SegModule.aux_weight``.
        dropout: in the FCN score head.
        front_end_steps: optimizer steps that train the front end alone before the module joins.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | nn.Module = "resnet18",
        *,
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = None,
        aux: bool = False,
        weights: str | None = None,
        in_channels: int = 3,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        dilations: Sequence[int] = BASIC_DILATIONS,
        supervise_front_end: bool = True,
        dropout: float = 0.1,
        front_end_steps: int = 0,
    ):
        if front_end_steps < 0:
            raise ValueError(f"front_end_steps must be >= 0, got {front_end_steps}")
        super().__init__(
            num_classes, backbone, output_stride, multi_grid, aux, weights, in_channels, input_mean, input_std
        )
        self.classifier = FCNHead(self.backbone.channels["out"], num_classes, dropout)
        self.context = ContextModule(num_classes, tuple(dilations))
        self.supervise_front_end = supervise_front_end
        self.front_end_steps = front_end_steps
        self.register_buffer("batches_trained", torch.zeros((), dtype=torch.long))

    def optimizer_stepped(self) -> None:
        """Count one optimizer step: the clock of the two-stage schedule (forward calls do not count)."""
        self.batches_trained += 1

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        # always through the module: while the front end trains alone the module keeps its identity init (no
        # gradient reaches it), so this is max(scores, 0), whose argmax is the front end's wherever a score is > 0
        return self.context(self.classifier(features["out"]))

    def head_outputs(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self.training:
            return {"out": self.logits(features)}
        scores = self.classifier(features["out"])
        if int(self.batches_trained) < self.front_end_steps:
            outputs = {"out": scores}
        else:
            outputs = {"out": self.context(scores)}
            if self.supervise_front_end:
                outputs["front_end"] = scores
        if self.aux_classifier is not None:
            outputs["aux"] = self.aux_classifier(features["aux"])
        return outputs
