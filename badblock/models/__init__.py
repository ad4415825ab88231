"""Networks. Models know nothing of data or training."""

from badblock.models.unet import UNet, build_model, parameter_count

__all__ = ["UNet", "build_model", "parameter_count"]
