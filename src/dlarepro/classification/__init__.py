"""Image classification runs: CIFAR-10/100 (Tables 1, 4-6, Figures 2 and 4) and ImageNet (Table 2).

``config`` (no torch import) validates configs; ``engine`` trains and evaluates one run.
"""

from ..runconfig import RunKind
from . import config

KIND = RunKind(
    name="classification", command="train", config=config, engine="dlarepro.classification.engine:train",
    description="train one classification run (CIFAR-10/100, ImageNet); resumes from the run folder's checkpoint",
    matches=lambda run: "detector" not in run,
)

__all__ = ["KIND", "config"]
