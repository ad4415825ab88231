"""Inference: a checkpoint becomes a predictor; the network's input layout, in one place.

Repair and evaluate use this package, training produces for it (its checkpoints, and its
batches built with :mod:`badblock.inference.layout`); it imports models and utils, never
training.
"""

from badblock.inference.layout import NORMALISE_MODES, ChannelLayout, normalise_scale
from badblock.inference.predictor import Predictor, load_predictor

__all__ = ["Predictor", "load_predictor", "ChannelLayout", "normalise_scale", "NORMALISE_MODES"]
