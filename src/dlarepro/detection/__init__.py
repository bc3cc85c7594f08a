"""COCO object detection and instance segmentation (Table 3): Faster / Mask R-CNN with FPN on the
zoo's ImageNet ResNets, trained with the 1x schedule and scored with pycocotools.

``config`` (no torch import) validates configs; ``model`` builds detectors; ``engine`` trains and
evaluates one run.
"""

from ..runconfig import RunKind
from . import config

KIND = RunKind(
    name="detection", command="detect", config=config, engine="dlarepro.detection.engine:train_detection",
    description="train and evaluate one COCO detection run (Faster / Mask R-CNN; resumes)",
    matches=config.is_detection,
)

__all__ = ["KIND", "config"]
