"""Scanner physics: presets, the LOR <-> bin geometry, dead-block masks and the view wrap.

numpy only (no torch): the data, training and repair layers build on it.
"""

from badblock.physics.geometry import (
    crystal_is_real,
    lor_geometry,
    lor_to_bin,
    plane_ring_pairs,
    ring_is_real,
    ring_pair_plane,
    ring_z_mm,
    transaxial_lookup,
    transaxial_pairs,
)
from badblock.physics.mask import (
    dead_block_mask,
    dead_set,
    load_mask,
    lost_lor_count,
    mask_summary,
    parse_blocks,
    parse_crystals,
    real_lor_count,
    resolve_mask,
    sensitivity_map,
)
from badblock.physics.scanners import PRESETS, Scanner, get_scanner
from badblock.physics.wrap import pad_views, partner_planes, radial_flip, tof_mirror, wrap_partner

__all__ = [
    "PRESETS", "Scanner", "get_scanner", "crystal_is_real", "ring_is_real", "lor_geometry",
    "lor_to_bin", "plane_ring_pairs", "ring_pair_plane", "ring_z_mm", "transaxial_lookup",
    "transaxial_pairs", "dead_block_mask", "dead_set", "load_mask", "lost_lor_count",
    "mask_summary", "parse_blocks", "parse_crystals", "real_lor_count", "resolve_mask",
    "sensitivity_map", "pad_views", "partner_planes", "radial_flip", "tof_mirror",
    "wrap_partner",
]
