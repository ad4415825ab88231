"""badblock: repair PET sinograms damaged by dead detector blocks with a UNet."""

__version__ = "0.1.0"
