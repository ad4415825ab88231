"""Scanner presets: crystals, rings, sinogram size, span and TOF of the supported scanners.

Every preset models its detector gaps the Siemens way: each transaxial block is followed by one
virtual gap crystal (so crystals per ring = blocks x (crystals per block + 1)); the mCT also has
one virtual gap ring between axial blocks (55 = 4 x (13 + 1) - 1). Virtual crystals and rings never
record counts, but they take part in the bin geometry.

Sources for the figures beyond the block and sinogram sizes (radius, spacings, TOF):
- mCT and mMR: STIR's ``Scanner.cxx`` (inner ring radius 421.0 / 328.0 mm, average depth of
  interaction 7 mm, ring spacing 4.054 / 4.0625 mm, default bin size 2.005 / 2.08626 mm); the
  a real mMR e7 sinogram header agrees (2.03125 mm per plane = half the ring spacing).
  mCT TOF: 13 bins of 312.5 ps, timing resolution about 540 ps (Jakoby et al., PMB 2011).
- Vision 600: ring diameter 820 mm (inner radius 410 mm, 7 mm depth of interaction as STIR uses
  for Siemens scanners), 3.2 mm crystals at an axial pitch of 3.29114 mm (van Sluis et al.,
  JNM 2019), timing resolution 214 ps; 33 TOF bins of about 143 ps span the 4.7 ns window.
- Central bin size of a non-arc-corrected sinogram = pi x effective radius / crystals per ring
  (half a crystal pitch); it reproduces STIR's mCT and mMR values to 0.3 %.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

from badblock.errors import BadInputError
from badblock.io.segments import Segment, storage_numbers


@dataclass(frozen=True)
class Scanner:
    """A cylindrical PET scanner and its sinogram layout ``[TOF, plane, view, bin]``.

    Transaxially, crystal ``i`` (0..crystals_per_ring-1) sits at angle ``2 pi i / N``; the
    bin convention is Siemens' (see :mod:`badblock.physics.geometry`). Axially, ring ``r`` sits at
    ``(r - (n_rings - 1) / 2) * ring_spacing_mm``. Lengths in mm, times in ps.
    """

    name: str
    crystals_per_block: int  # real crystals of a block, transaxially
    gap_crystals: int  # virtual gap crystals after each transaxial block
    blocks_transaxial: int
    rings_per_block: int  # real rings of a block, axially
    blocks_axial: int
    n_bins: int
    n_views: int
    mash: int  # sub-views (unmashed views) summed into one view
    span: int  # axial compression; odd, or 1 for no compression
    max_ring_diff: int
    n_tof: int  # 1 = no TOF
    tof_fwhm_ps: float  # timing resolution (0 without TOF)
    tof_bin_ps: float  # width of one stored TOF bin (0 without TOF)
    radius_mm: float  # effective detector radius (inner radius + mean depth of interaction)
    ring_spacing_mm: float
    bin_size_mm: float  # central bin size, pi * radius / crystals per ring
    gap_rings: int = 0  # virtual gap rings between axial blocks (not after the last)
    tof_order: str = "siemens"  # 'siemens' (0, +1, -1, +2, ...), 'linear', or 'none'

    def __post_init__(self):
        if self.crystals_per_ring % 2:
            raise BadInputError(f"scanner {self.name}", "crystals per ring must be even")
        if self.n_bins % 4:
            raise BadInputError(f"scanner {self.name}", "n_bins must be a multiple of 4 so that "
                                "the radial centre falls on a bin")
        if self.span != 1 and self.span % 2 == 0:
            raise BadInputError(f"scanner {self.name}", f"span {self.span} must be 1 or odd")
        if self.mash * self.n_views < self.crystals_per_ring // 2:
            raise BadInputError(f"scanner {self.name}", "views x mash must cover half the ring "
                                f"({self.mash} x {self.n_views} < {self.crystals_per_ring // 2})")
        if not 0 <= self.max_ring_diff < self.n_rings:
            raise BadInputError(f"scanner {self.name}", "max ring difference out of range")
        if self.tof_order not in ("siemens", "linear", "none"):
            raise BadInputError(f"scanner {self.name}", f"unknown tof_order {self.tof_order!r}")

    @property
    def block_pitch(self) -> int:
        """Crystal indices from one transaxial block to the next (real + gap)."""
        return self.crystals_per_block + self.gap_crystals

    @property
    def ring_pitch(self) -> int:
        """Ring indices from one axial block to the next (real + gap rings)."""
        return self.rings_per_block + self.gap_rings

    @property
    def crystals_per_ring(self) -> int:
        return self.blocks_transaxial * self.block_pitch

    @property
    def n_rings(self) -> int:
        return self.blocks_axial * self.ring_pitch - self.gap_rings

    @property
    def radial_offset(self) -> int:
        """``off`` of the bin convention: bin ``2 * off = n_bins / 2`` passes through the centre."""
        return self.n_bins // 4

    @property
    def n_subviews(self) -> int:
        """Unmashed views covering 180 degrees: half the crystals per ring."""
        return self.crystals_per_ring // 2

    @cached_property
    def segments(self) -> list[Segment]:
        """Axial segments in storage order 0, -1, +1, -2, +2, ...

        Segment ``k`` holds ring differences ``r2 - r1`` (ring of det2 minus ring of det1, see
        :func:`badblock.physics.geometry.transaxial_pairs`) in
        ``[span*k - span//2, span*k + span//2]``, capped at +-max_ring_diff; so segment +k has
        positive differences. With ``m`` the smallest |ring difference| of a segment it holds
        ``2*n_rings - 1 - 2*m`` planes (``n_rings - m`` at span 1).
        """
        half = self.span // 2
        n_side = math.ceil((self.max_ring_diff - half) / self.span) if self.span > 1 \
            else self.max_ring_diff
        out = []
        for k in storage_numbers(2 * n_side + 1):
            lo = max(self.span * k - half, -self.max_ring_diff)
            hi = min(self.span * k + half, self.max_ring_diff)
            m = 0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
            n = self.n_rings - m if self.span == 1 else 2 * self.n_rings - 1 - 2 * m
            out.append(Segment(number=k, min_rd=lo, max_rd=hi, n_planes=n))
        return out

    @property
    def n_planes(self) -> int:
        return sum(s.n_planes for s in self.segments)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Sinogram shape ``[TOF, plane, view, bin]``."""
        return (self.n_tof, self.n_planes, self.n_views, self.n_bins)

    def block_crystals(self, t: int) -> range:
        """Real crystal indices of transaxial block ``t``."""
        if not 0 <= t < self.blocks_transaxial:
            raise BadInputError("dead block", f"transaxial block {t} outside 0.."
                                f"{self.blocks_transaxial - 1} of scanner {self.name}")
        return range(t * self.block_pitch, t * self.block_pitch + self.crystals_per_block)

    def block_rings(self, a: int) -> range:
        """Real ring indices of axial block ``a``."""
        if not 0 <= a < self.blocks_axial:
            raise BadInputError("dead block", f"axial block {a} outside 0..{self.blocks_axial - 1}"
                                f" of scanner {self.name}")
        return range(a * self.ring_pitch, a * self.ring_pitch + self.rings_per_block)


def _bin_size(radius_mm: float, crystals: int) -> float:
    return round(math.pi * radius_mm / crystals, 4)


PRESETS: dict[str, Scanner] = {
    "vision": Scanner(
        name="vision", crystals_per_block=20, gap_crystals=1, blocks_transaxial=38,
        rings_per_block=10, blocks_axial=8, n_bins=520, n_views=50, mash=8, span=19,
        max_ring_diff=79, n_tof=33, tof_fwhm_ps=214.0, tof_bin_ps=143.0,
        radius_mm=417.0, ring_spacing_mm=3.29114, bin_size_mm=_bin_size(417.0, 798)),
    "mct": Scanner(
        name="mct", crystals_per_block=13, gap_crystals=1, blocks_transaxial=48,
        rings_per_block=13, blocks_axial=4, gap_rings=1, n_bins=400, n_views=168, mash=2,
        span=11, max_ring_diff=49, n_tof=13, tof_fwhm_ps=540.0, tof_bin_ps=312.5,
        radius_mm=428.0, ring_spacing_mm=4.054, bin_size_mm=_bin_size(428.0, 672)),
    "mmr": Scanner(
        name="mmr", crystals_per_block=8, gap_crystals=1, blocks_transaxial=56,
        rings_per_block=8, blocks_axial=8, n_bins=344, n_views=252, mash=1, span=11,
        max_ring_diff=60, n_tof=1, tof_fwhm_ps=0.0, tof_bin_ps=0.0, tof_order="none",
        radius_mm=335.0, ring_spacing_mm=4.0625, bin_size_mm=_bin_size(335.0, 504)),
    # A scaled-down scanner for the demo and the tests: 16 blocks of 8+1 crystals, 3 axial blocks
    # of 4 rings. 36 views (mash 2 of 72) are not a multiple of 8, so the UNet's view padding
    # (36 -> 40) exercises the flipped wrap; 2 x 36 = 72 = half the ring makes that wrap exact.
    "mini": Scanner(
        name="mini", crystals_per_block=8, gap_crystals=1, blocks_transaxial=16,
        rings_per_block=4, blocks_axial=3, n_bins=64, n_views=36, mash=2, span=5,
        max_ring_diff=7, n_tof=3, tof_fwhm_ps=500.0, tof_bin_ps=600.0,
        radius_mm=200.0, ring_spacing_mm=4.0, bin_size_mm=_bin_size(200.0, 144)),
}


def get_scanner(name: str | Scanner, **overrides) -> Scanner:
    """A preset by name (mini, vision, mct, mmr), optionally with fields replaced.

    ``get_scanner("mmr", span=1)`` gives the mMR's uncompressed 4084-plane layout.
    """
    if isinstance(name, Scanner):
        base = name
    else:
        key = str(name).strip().lower()
        if key not in PRESETS:
            raise BadInputError("scanner.name", f"unknown scanner {name!r} "
                                f"(choose from {', '.join(PRESETS)})")
        base = PRESETS[key]
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(Scanner)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise BadInputError("scanner", f"unknown scanner field(s) {', '.join(bad)}")
    return dataclasses.replace(base, **overrides)
