"""Scan input/output: flat binary, STIR Interfile and Siemens e7 sinograms, by memory map.

Every scan is ``[TOF, plane, view, bin]`` (bin fastest); non-TOF data have TOF = 1.
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
