"""COCO object detection and instance segmentation (Table 3): Faster / Mask R-CNN with FPN on the
zoo's ImageNet ResNets, trained with the 1x schedule and scored with pycocotools.

``dlarepro.detection.config`` (no torch import) validates configs; ``model`` builds detectors;
``engine`` trains and evaluates one run (``train_detection``).
"""

from .config import DETECTORS, is_detection, resolve

__all__ = ["DETECTORS", "is_detection", "resolve", "train_detection"]


def train_detection(config, progress=None):
    from .engine import train_detection as run

    return run(config, progress)
