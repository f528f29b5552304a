"""Lightning callbacks (last checkpoint and resume state, backbone freezing, validation images, the final
validation, the evaluation report) and the Hydra callback that records each job's status. Checkpoint file I/O is
``seg.runs.checkpoint``'s."""

from seg.callbacks.evaluation_report import EvaluationReport
from seg.callbacks.final_validation import FinalValidation
from seg.callbacks.finetune import BackboneFreeze
from seg.callbacks.image_logger import ValidationImageLogger
from seg.callbacks.resume import LastCheckpoint, ResumeState

__all__ = [
    "BackboneFreeze",
    "EvaluationReport",
    "FinalValidation",
    "LastCheckpoint",
    "ResumeState",
    "ValidationImageLogger",
]
