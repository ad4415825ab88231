"""badblock: repair PET sinograms damaged by dead detector blocks with a UNet.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets
it: it must be in place before torch loads its OpenMP runtime, and it stops torch's threads
from spinning at barriers, which on a shared machine made training 3-4x slower (the reasons
and the measurement: :mod:`badblock.utils.hardware`). Where torch was imported first, the
setting has no effect and nothing else changes.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
