"""dla-repro: a reproducibility pipeline for layer-attention research in vision networks."""

__version__ = "0.1.0"
