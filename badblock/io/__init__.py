"""Scan input/output: flat binary, STIR Interfile and Siemens e7 sinograms, by memory map.

Every scan is ``[TOF, plane, view, bin]`` (bin fastest); non-TOF data have TOF = 1. One plane
is ``[view, bin]``. A dead-block mask is float32 ``[plane, view, bin]``: the fraction of real
LORs each bin lost (0..1), the same for every TOF bin. Image-domain volumes use the same 4-D
form with TOF = 1: ``[1, slice, H, W]``. File naming: :mod:`badblock.io.naming`.
"""

from badblock.io.header import (
    Scan,
    ScanHeader,
    tof_index_order,
    tof_offsets,
    tof_time_order,
)
from badblock.io.scan import (
    ScanWriter,
    check_finite,
    open_scan_writer,
    output_paths,
    read_header,
    read_scan,
    write_scan,
)
from badblock.io.segments import Segment

__all__ = [
    "Scan",
    "ScanHeader",
    "ScanWriter",
    "Segment",
    "check_finite",
    "open_scan_writer",
    "output_paths",
    "read_header",
    "read_scan",
    "tof_index_order",
    "tof_offsets",
    "tof_time_order",
    "write_scan",
]
