"""STIR Interfile projection data (``.hs`` header + raw data file).

STIR lists the axes from fastest (``[1]``, tangential coordinate) to slowest: ``[2]``/``[3]``
are view and axial coordinate in either order (STIR's storage orders
Segment_AxialPos_View_TangPos and Segment_View_AxialPos_TangPos), ``[4]`` segment and, for
TOF data, ``[5]`` timing positions (outermost). Segments appear in the data in the order the
per-segment lists give them; STIR numbers them by ring difference (the one holding ring
difference 0 is segment 0). STIR stores TOF bins in time order, earliest first, so
``tof_order='linear'``. We write axial-major (plane, view, bin), which maps to one memmap
``[TOF, plane, view, bin]`` and which STIR reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.io.header import ScanHeader, byte_order_name, explicit_dtype
from badblock.io.keys import Keys, format_list, merge_keys, norm_key, resolve_data_file
from badblock.io.segments import Segment

END_KEY = "!END OF INTERFILE"

_AXES = {
    "tangential coordinate": "bin",
    "view": "view",
    "axial coordinate": "axial",
    "segment": "segment",
    "timing positions": "tof",
}


def number_dtype(path, number_format: str, nbytes: int | None, byte_order: str) -> np.dtype:
    """Interfile ``number format`` + bytes per pixel + byte order -> numpy dtype."""
    fmt = " ".join(number_format.lower().split())
    if fmt in ("float", "short float", "long float"):
        nbytes = nbytes or (8 if fmt == "long float" else 4)
        if nbytes not in (4, 8):
            raise BadInputError(path, f"{nbytes}-byte float is not supported (4 or 8)")
        kind = "f"
    elif fmt in ("signed integer", "unsigned integer"):
        if nbytes is None:
            raise BadInputError(path, "header is missing the required key '!number of bytes per "
                                      "pixel' (needed for integer data)")
        if nbytes not in (1, 2, 4, 8):
            raise BadInputError(path, f"{nbytes}-byte integers are not supported (1, 2, 4, 8)")
        kind = "i" if fmt.startswith("signed") else "u"
    else:
        raise BadInputError(path, f"unknown number format '{number_format}' (expected float, "
                                  "signed integer or unsigned integer)")
    order = {"littleendian": "<", "bigendian": ">"}.get(byte_order.strip().lower().replace(" ", ""))
    if order is None:
        raise BadInputError(path, f"unknown byte order '{byte_order}' (LITTLEENDIAN or BIGENDIAN)")
    return np.dtype(f"{order}{kind}{nbytes}")


def number_format_name(dtype: np.dtype) -> str:
    kind = np.dtype(dtype).kind
    if kind == "f":
        return "float"
    if kind == "i":
        return "signed integer"
    if kind == "u":
        return "unsigned integer"
    raise BadInputError("dtype", f"{dtype} cannot be stored in Interfile (integers or floats)")


def number_segments(path, min_rd: list[int], max_rd: list[int]) -> list[int]:
    """STIR segment numbers from per-segment ring difference ranges (stream order)."""
    order = sorted(range(len(min_rd)), key=lambda i: (min_rd[i], max_rd[i]))
    zero = [i for i in order if min_rd[i] <= 0 <= max_rd[i]]
    if len(zero) != 1:
        raise BadInputError(path, "cannot tell segment 0: expected exactly one segment whose ring "
                                  "difference range holds 0")
    centre = order.index(zero[0])
    numbers = [0] * len(order)
    for rank, i in enumerate(order):
        numbers[i] = rank - centre
    return numbers


def read_header(path: Path, keys: Keys) -> ScanHeader:
    """Parse a STIR projection data header (``view_major`` set for data stored
    Segment_View_AxialPos_TangPos)."""
    ndim = keys.int("number of dimensions")
    axes: dict[str, int] = {}
    for k in range(1, ndim + 1):
        label = " ".join(keys.require(f"matrix axis label [{k}]").lower().split())
        if label not in _AXES:
            raise BadInputError(path, f"unsupported matrix axis label [{k}] '{label}' (STIR "
                                      f"projection data: {', '.join(_AXES)})")
        axes[_AXES[label]] = k
    for needed in ("bin", "view", "axial", "segment"):
        if needed not in axes:
            raise BadInputError(path, f"no matrix axis is labelled as {needed} "
                                      "(expected STIR 3-D projection data)")
    if axes["bin"] != 1 or axes["segment"] != 4 or axes.get("tof", 5) != 5:
        raise BadInputError(path, "unsupported axis order: STIR stores tangential [1], view and "
                                  "axial coordinate [2]/[3], segment [4], timing positions [5]")
    view_major = axes["view"] > axes["axial"]

    n_bins = keys.int(f"matrix size [{axes['bin']}]")
    n_views = keys.int(f"matrix size [{axes['view']}]")
    n_segments = keys.int(f"matrix size [{axes['segment']}]")
    axial = keys.int_list(f"matrix size [{axes['axial']}]")
    n_tof = keys.int(f"matrix size [{axes['tof']}]") if "tof" in axes else 1
    if len(axial) != n_segments:
        raise BadInputError(path, f"{n_segments} segments but {len(axial)} axial sizes listed")
    min_rd = keys.int_list("minimum ring difference per segment")
    max_rd = keys.int_list("maximum ring difference per segment")
    if len(min_rd) != n_segments or len(max_rd) != n_segments:
        raise BadInputError(path, f"{n_segments} segments but the ring difference lists have "
                                  f"{len(min_rd)} and {len(max_rd)} entries")
    numbers = number_segments(path, min_rd, max_rd)
    segments = [Segment(n, lo, hi, a) for n, lo, hi, a in zip(numbers, min_rd, max_rd, axial)]

    nbytes = keys.int("number of bytes per pixel", required=False)
    dtype = number_dtype(path, keys.require("number format"), nbytes,
                         keys.get("imagedata byte order", "BIGENDIAN"))  # Interfile default
    data_file = resolve_data_file(path, keys.require("name of data file"))
    offset = keys.int("data offset in bytes [1]", default=0)
    mashing = keys.int("TOF mashing factor", required=False) if n_tof > 1 else None
    for name, n in (("bins", n_bins), ("views", n_views), ("TOF bins", n_tof)):
        if n < 1:
            raise BadInputError(path, f"number of {name} must be positive, got {n}")
    return ScanHeader(
        format="interfile", shape=(n_tof, sum(axial), n_views, n_bins), dtype=dtype,
        data_file=data_file, data_offset=offset, segments=segments,
        tof_order="linear" if n_tof > 1 else "none", tof_mashing=mashing,
        scanner=None, header_path=path, keys=keys.as_dict(), view_major=view_major)


def header_text(header: ScanHeader, data_name: str) -> str:
    """The STIR header for ``header`` (axial-major layout), keeping the input's other keys."""
    n_tof, n_planes, n_views, n_bins = header.shape
    dtype = explicit_dtype(header.dtype)
    segments = header.segments or [Segment(0, 0, 0, n_planes)]
    ndim = 5 if n_tof > 1 else 4
    new: list[tuple[str, str]] = [
        ("!INTERFILE", ""),
        ("name of data file", data_name),
        ("!GENERAL DATA", ""),
        ("!GENERAL IMAGE DATA", ""),
        ("!type of data", "PET"),
        ("imagedata byte order", "LITTLEENDIAN" if byte_order_name(dtype) == "little"
         else "BIGENDIAN"),
        ("!PET STUDY (General)", ""),
        ("!PET data type", "Emission"),
        ("!number format", number_format_name(dtype)),
        ("!number of bytes per pixel", str(dtype.itemsize)),
        ("number of dimensions", str(ndim)),
    ]
    if n_tof > 1:
        new += [("matrix axis label [5]", "timing positions"), ("!matrix size [5]", str(n_tof))]
    new += [
        ("matrix axis label [4]", "segment"),
        ("!matrix size [4]", str(len(segments))),
        ("matrix axis label [3]", "axial coordinate"),
        ("!matrix size [3]", format_list(s.n_planes for s in segments)),
        ("matrix axis label [2]", "view"),
        ("!matrix size [2]", str(n_views)),
        ("matrix axis label [1]", "tangential coordinate"),
        ("!matrix size [1]", str(n_bins)),
        ("minimum ring difference per segment", format_list(s.min_rd for s in segments)),
        ("maximum ring difference per segment", format_list(s.max_rd for s in segments)),
    ]
    if n_tof > 1:
        new.append(("TOF mashing factor", str(header.tof_mashing or 1)))
    new += [("data offset in bytes[1]", "0"), ("number of time frames", "1")]
    if header.scanner and not any(norm_key(k) == "originating system" for k in header.keys):
        new.insert(2, ("originating system", header.scanner))
    new_norm = {norm_key(k) for k, _ in new}
    drop = {norm_key(f"matrix axis label [{k}]") for k in range(1, 10)}
    drop |= {norm_key(f"matrix size [{k}]") for k in range(1, 10)}
    drop |= {"tof mashing factor"}
    drop -= new_norm
    return merge_keys(header.keys, new, drop, END_KEY)
