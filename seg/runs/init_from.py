"""Weights of one network loaded into another by key: strictly (every tensor fits, or an error names the file and
the keys), or for fine-tuning with ``init_from=PATH`` (the last classifier convolutions re-initialised when the
class count differs). Used by ``seg.train`` (``init_from``), :func:`seg.runs.loaded.load_model` and the resume
checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from seg.models.support.weights import CheckpointError, check_state_dict, read_state_dict

__all__ = ["classifier_keys", "init_weights", "load_net_weights"]


def classifier_keys(net: nn.Module) -> list[str]:
    """State_dict keys of the last convolution of ``classifier`` and ``aux_classifier``: the class-dependent ones."""
    keys = []
    for head in ("classifier", "aux_classifier"):
        module = getattr(net, head, None)
        if module is None:
            continue
        name, conv = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)][-1]
        keys += [".".join(filter(None, (head, name, p))) for p, _ in conv.named_parameters(recurse=False)]
    return keys


def load_net_weights(
    net: nn.Module, state: Mapping[str, Tensor], source: str | Path = "checkpoint", reinit_classifier: bool = False
) -> list[str]:
    """Load ``state`` into ``net`` by key (strict); a class-count mismatch is an error unless ``reinit_classifier``.

    ``reinit_classifier=True`` (fine-tuning on another label set) keeps ``net``'s freshly initialised last
    classifier convolutions and loads everything else. An auxiliary head the net lacks is dropped (inference only).
    Returns the keys left at their fresh initialisation.
    """
    expected = net.state_dict()
    state = dict(state)
    if getattr(net, "aux_classifier", "absent") is None:
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    head = [
        k
        for k in classifier_keys(net)
        if k in state and state[k].shape[0] != expected[k].shape[0] and state[k].shape[1:] == expected[k].shape[1:]
    ]
    if head:
        if not reinit_classifier:
            trained, built = state[head[0]].shape[0], expected[head[0]].shape[0]
            raise CheckpointError(
                f"{source} was trained for {trained} classes but the model is built for {built}: use a dataset with "
                f"{trained} classes, or load it with reinit_classifier=True to fine-tune a new classifier"
            )
        state = {k: v for k, v in state.items() if k not in head}
    check_state_dict(net, state, source, ignore=head)
    net.load_state_dict(state, strict=False)
    return head


def init_weights(net: nn.Module, path: str | Path) -> str:
    """``init_from=PATH``: start ``net`` from the weights of a seg checkpoint (a run's ``last.ckpt`` or best), or a
    torchvision ``deeplabv3_resnet50/101`` file. Every tensor whose name and shape fit is loaded; the last
    classifier convolutions (``classifier``, ``aux_classifier``) are re-initialised when the class count differs;
    anything else that does not fit is a CheckpointError naming the file and the keys. Returns a one-line summary.

    Unlike ``ckpt_path`` (which resumes the same run: optimizer, step, loader position), only weights are taken.
    """
    state = read_state_dict(path)
    file_aux = any(k.startswith("aux_classifier.") for k in state)
    before = {k: v.clone() for k, v in net.state_dict().items() if k in classifier_keys(net)}
    reinit = load_net_weights(net, state, path, reinit_classifier=True)
    loaded = sum(1 for k in net.state_dict() if k in state and k not in reinit)
    line = f"init_from {path}: loaded {loaded} tensors"
    if reinit:
        trained, built = state[reinit[0]].shape[0], before[reinit[0]].shape[0]
        layers = sorted({k.rsplit(".", 1)[0] for k in reinit})
        line += f"; re-initialised {', '.join(layers)} for {built} classes (the file has {trained})"
    if file_aux and getattr(net, "aux_classifier", None) is None:
        line += "; the file's auxiliary head is not used (model.net.aux=false)"
    return line
