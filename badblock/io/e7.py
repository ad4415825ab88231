"""Siemens e7 (Interfile dialect) sinograms: ``.s.hdr`` header + ``.s`` data file.

Axes: ``matrix size [1]`` bins, ``[2]`` projections (views), ``[3]`` planes (all segments,
stored 0, -1, +1, -2, +2, ... with sizes in ``%segment table``), TOF outermost with
``%number of TOF time bins`` bins stored centre-first interleaved (``tof_order='siemens'``).
One data file can hold several scan data types (prompts, randoms) at ``data offset in bytes
[k]``; Siemens' delayed-coincidence (randoms) block has no TOF axis. ``%compression := on``
data cannot be memory-mapped and are refused by the reader.
"""

from __future__ import annotations

from pathlib import Path

from badblock.errors import BadInputError
from badblock.io.header import ScanHeader, byte_order_name, explicit_dtype
from badblock.io.interfile import number_dtype, number_format_name
from badblock.io.keys import Keys, format_list, merge_keys, norm_key, resolve_data_file
from badblock.io.segments import Segment, storage_numbers

END_KEY = "END OF INTERFILE"

_LABELS = {1: ("bin",), 2: ("projection", "view"), 3: ("plane", "sinogram")}

# (bins, views, planes, TOF bins) -> badblock scanner preset, for headers that do not say.
KNOWN_SCANNERS = {
    (344, 252, 4084, 1): "mmr",
    (344, 252, 837, 1): "mmr",
    (520, 50, 815, 33): "vision",
    (400, 168, 621, 13): "mct",
    (400, 168, 621, 1): "mct",
}


def is_e7(keys: Keys) -> bool:
    """Siemens headers name their namespace or use the e7 segment table / scan data types."""
    return any(keys.has(k) for k in ("SMS-MI header name space", "segment table",
                                      "scan data type description [1]", "number of TOF time bins"))


def compressed(keys: Keys) -> bool:
    return (keys.get("compression") or "off").strip().lower() not in ("off", "none", "0", "no")


def segments_from_table(path, table: list[int], span: int | None, mrd: int | None) -> list[Segment]:
    """Segments in storage order; segment k covers ring differences [k*span - (span-1)/2,
    k*span + (span-1)/2] capped at the maximum ring difference (Siemens' axial compression)."""
    numbers = storage_numbers(len(table))
    if span is None:
        raise BadInputError(path, "header is missing the required key '%axial compression' "
                                  "(needed to read the segment table)")
    if span < 1 or span % 2 == 0:
        raise BadInputError(path, f"'%axial compression := {span}' must be a positive odd number")
    half = (span - 1) // 2
    out = []
    for n, planes in zip(numbers, table):
        lo, hi = n * span - half, n * span + half
        if mrd is not None:
            lo, hi = max(lo, -mrd), min(hi, mrd)
        out.append(Segment(n, lo, hi, planes))
    return out


def read_header(path: Path, keys: Keys, data_type: str | None = None) -> ScanHeader:
    ndim = keys.int("number of dimensions", default=3)
    if ndim not in (3, 4):
        raise BadInputError(path, f"'number of dimensions := {ndim}' (e7 sinograms have 3, or 4 "
                                  "with TOF)")
    for k, allowed in _LABELS.items():
        label = keys.get(f"matrix axis label [{k}]")
        if label is not None and not any(a in label.lower() for a in allowed):
            raise BadInputError(path, f"matrix axis label [{k}] is '{label}', expected "
                                      f"{allowed[0]}")
    n_bins = keys.int("matrix size [1]")
    n_views = keys.int("matrix size [2]")
    n_planes = keys.int("matrix size [3]")
    n_tof = keys.int("number of TOF time bins", default=1)
    if ndim == 4 and keys.int("matrix size [4]") != n_tof:
        raise BadInputError(path, "matrix size [4] and '%number of TOF time bins' disagree")
    for name, n in (("bins", n_bins), ("projections", n_views), ("planes", n_planes),
                    ("TOF time bins", n_tof)):
        if n < 1:
            raise BadInputError(path, f"number of {name} must be positive, got {n}")

    segments = None
    if keys.has("segment table"):
        table = keys.int_list("segment table")
        if sum(table) != n_planes:
            raise BadInputError(path, f"segment table sums to {sum(table)} planes but matrix size "
                                      f"[3] is {n_planes}")
        segments = segments_from_table(path, table, keys.int("axial compression", required=False),
                                       keys.int("maximum ring difference", required=False))

    nbytes = keys.int("number of bytes per pixel", required=False)
    dtype = number_dtype(path, keys.require("number format"), nbytes,
                         keys.get("image data byte order", "LITTLEENDIAN"))

    n_types = keys.int("number of scan data types", default=0)
    types = [(keys.get(f"scan data type description [{k}]") or "").strip().lower()
             for k in range(1, n_types + 1)]
    wanted = (data_type or "prompts").strip().lower()
    if types:
        if wanted not in types:
            raise BadInputError(path, f"no scan data type '{wanted}' (the file holds "
                                      f"{', '.join(t or '?' for t in types)})")
        k = types.index(wanted) + 1
    else:
        if data_type not in (None, "prompts"):
            raise BadInputError(path, f"no scan data type '{wanted}' (header lists none)")
        k = 1
    offset = keys.int(f"data offset in bytes [{k}]", default=0)
    if wanted != "prompts":
        n_tof = 1  # Siemens stores delayed coincidences without TOF
    mashing = keys.int("TOF mashing factor", required=False)
    shape = (n_tof, n_planes, n_views, n_bins)
    return ScanHeader(
        format="e7", shape=shape, dtype=dtype,
        data_file=resolve_data_file(path, keys.require("name of data file")),
        data_offset=offset, segments=segments,
        tof_order="siemens" if n_tof > 1 else "none",
        tof_mashing=mashing if n_tof > 1 else None,
        scanner=KNOWN_SCANNERS.get((n_bins, n_views, n_planes, n_tof)),
        header_path=path, keys=keys.as_dict(), data_type=wanted)


def other_blocks(header: ScanHeader) -> list[tuple[str, int, int]]:
    """The scan data types of an e7 source besides the one read, as
    ``(description, offset, nbytes)``, so a writer can carry them over (a repaired prompts file
    keeps its randoms). Empty when the source is not e7, compressed, missing, or not the
    same sinogram size (then the blocks would not belong to the data written).
    """
    if header.format != "e7" or header.header_path is None or not header.data_file.is_file():
        return []
    keys = Keys(header.header_path, list(header.keys.items()))
    if compressed(keys):
        return []
    try:
        sizes = (keys.int("matrix size [3]"), keys.int("matrix size [2]"),
                 keys.int("matrix size [1]"))
        n_tof = keys.int("number of TOF time bins", default=1)
        n_types = keys.int("number of scan data types", default=0)
    except BadInputError:
        return []
    if sizes != tuple(header.shape[1:]):
        return []
    plane_bytes = int(sizes[0]) * sizes[1] * sizes[2] * header.dtype.itemsize
    file_size = header.data_file.stat().st_size
    out = []
    for k in range(1, n_types + 1):
        desc = (keys.get(f"scan data type description [{k}]") or "").strip()
        if desc.lower() == (header.data_type or "prompts"):
            continue
        offset = keys.int(f"data offset in bytes [{k}]", default=0)
        nbytes = plane_bytes * (n_tof if desc.lower() == "prompts" else 1)
        if offset + nbytes <= file_size:
            out.append((desc, offset, nbytes))
    return out


def _span_and_mrd(segments: list[Segment]) -> tuple[int, int]:
    centre = next((s for s in segments if s.number == 0), segments[0])
    return centre.max_rd - centre.min_rd + 1, max(max(abs(s.min_rd), abs(s.max_rd))
                                                 for s in segments)


def header_text(header: ScanHeader, data_name: str,
                extra: list[tuple[str, int]] = ()) -> str:
    """The e7 header for ``header``: its scan data type at offset 0, then the ``extra``
    ``(description, nbytes)`` blocks in turn; the input's other keys are kept."""
    n_tof, n_planes, n_views, n_bins = header.shape
    dtype = explicit_dtype(header.dtype)
    new: list[tuple[str, str]] = [
        ("!INTERFILE", ""),
        ("!name of data file", data_name),
        ("%compression", "off"),
        ("image data byte order", "LITTLEENDIAN" if byte_order_name(dtype) == "little"
         else "BIGENDIAN"),
        ("number format", number_format_name(dtype)),
        ("!number of bytes per pixel", str(dtype.itemsize)),
        ("number of dimensions", "3"),
        ("matrix axis label [1]", "bin"),
        ("matrix axis label [2]", "projection"),
        ("matrix axis label [3]", "plane"),
        ("matrix size [1]", str(n_bins)),
        ("matrix size [2]", str(n_views)),
        ("matrix size [3]", str(n_planes)),
    ]
    segments = header.segments
    if segments:
        span, mrd = _span_and_mrd(segments)
        new += [
            ("%axial compression", str(span)),
            ("%maximum ring difference", str(mrd)),
            ("%number of segments", str(len(segments))),
            ("%segment table", format_list(s.n_planes for s in segments)),
        ]
    new += [
        ("%total number of sinograms", str(n_planes)),
        ("%number of TOF time bins", str(n_tof)),
        ("%TOF mashing factor", str(header.tof_mashing or 1)),
        ("number of scan data types", str(1 + len(extra))),
        ("scan data type description [1]", header.data_type or "prompts"),
        ("data offset in bytes [1]", "0"),
    ]
    offset = header.nbytes
    for k, (desc, nbytes) in enumerate(extra, start=2):
        new += [(f"scan data type description [{k}]", desc),
                (f"data offset in bytes [{k}]", str(offset))]
        offset += nbytes
    if header.scanner and not any(norm_key(k) == "originating system" for k in header.keys):
        new.insert(2, ("%originating system", header.scanner))
    new_norm = {norm_key(k) for k, _ in new}
    drop = {norm_key(f"{key} [{k}]") for k in range(1, 10)
            for key in ("scan data type description", "data offset in bytes", "matrix size",
                        "matrix axis label")}
    drop |= {"compressor version", "segment table", "axial compression",
             "maximum ring difference", "number of segments"}
    drop -= new_norm
    return merge_keys(header.keys, new, drop, END_KEY)
