"""Section of the preprocessing stage (raw scans -> training store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class PreprocessConfig:
    inputs: list[str] = field(default_factory=list)  # files, globs or folders
    targets: list[str] = field(default_factory=list)  # paired kind: target scans, same order
    # sinogram: scans [TOF, plane, view, bin]; image: volumes [slice, H, W]; paired: inputs
    # with their targets (preprocess.targets).
    kind: Literal["sinogram", "image", "paired"] = "sinogram"
    store: str = "store"  # store folder, relative to run.output
    val_fraction: float = 0.25  # share of whole scans held out for validation
    val_scans: list[str] = field(default_factory=list)  # explicit validation scans (by name)
    # Overrides for headerless (flat) inputs: shape [TOF, plane, view, bin] or [slice, H, W].
    shape: list[int] = field(default_factory=list)
    dtype: str = "uint16"  # number type of headerless inputs
    # Byte order of headerless inputs (Siemens raw files are little-endian).
    byte_order: Literal["little", "big"] = "little"
    offset: int = 0  # bytes before the data in headerless inputs
    # TOF order of headerless files: auto = the scanner preset's when the shape matches,
    # else 'siemens' (centre-first interleaved) for TOF data.
    tof_order: Literal["auto", "siemens", "linear", "none"] = "auto"
    # False (default): the store references the read-only raw files in place (stats +
    # manifest only; a raw file whose size or time changed is refused on open). True: copy
    # the counts into the store, self-contained but a full write (and fsync) of every byte.
    copy: bool = False
