"""Interfile ``key := value`` text, shared by the STIR and Siemens e7 dialects.

Keys are matched after normalising: case, leading ``!``/``%``, runs of blanks and the blank
before an index (``data offset in bytes[1]`` == ``%data offset in bytes [1]``) do not matter.
The original spelling and order are kept so a writer can give the user's keys back.
"""

from __future__ import annotations

import re
from pathlib import Path

from badblock.errors import BadInputError

_INDEX = re.compile(r"\s*\[\s*(\d+)\s*\]")
_BLANKS = re.compile(r"\s+")


def norm_key(key: str) -> str:
    k = key.strip().lstrip("!%").strip().lower()
    k = _INDEX.sub(r" [\1]", k)
    return _BLANKS.sub(" ", k).strip()


def looks_like_interfile(head: bytes) -> bool:
    """True when the file starts (after blanks/comments) with ``!INTERFILE``."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return False
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        return norm_key(s.split(":=")[0]) == "interfile"
    return False


class Keys:
    """Parsed header: ordered ``(spelled key, value)`` pairs with normalised lookup."""

    def __init__(self, path: Path, pairs: list[tuple[str, str]]):
        self.path = path
        self.pairs = pairs
        self._index: dict[str, str] = {}
        for key, value in pairs:
            self._index.setdefault(norm_key(key), value)

    @classmethod
    def read(cls, path: Path) -> Keys:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise BadInputError(path, "header file not found") from None
        except OSError as exc:
            raise BadInputError(path, f"cannot read header ({exc.strerror})") from None
        if b"\0" in raw[:65536]:
            raise BadInputError(path, "is a binary file, not an Interfile header")
        text = raw.decode("latin-1")
        pairs = []
        for line in text.splitlines():
            s = line.strip()
            if not s or s.startswith(";") or ":=" not in s:
                continue
            key, _, value = s.partition(":=")
            pairs.append((key.strip(), value.strip()))
        if not pairs or norm_key(pairs[0][0]) != "interfile":
            raise BadInputError(path, "not an Interfile header (no '!INTERFILE :=' first line)")
        return cls(path, pairs)

    def as_dict(self) -> dict:
        """Spelled key -> value, in file order (a repeated key keeps its first value)."""
        out: dict[str, str] = {}
        for key, value in self.pairs:
            out.setdefault(key, value)
        return out

    def has(self, key: str) -> bool:
        return norm_key(key) in self._index

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._index.get(norm_key(key), default)

    def require(self, key: str) -> str:
        value = self._index.get(norm_key(key))
        if value is None or value == "":
            raise BadInputError(self.path, f"header is missing the required key '{key}'")
        return value

    def int(self, key: str, default: int | None = None, required: bool = True) -> int | None:
        value = self.get(key)
        if value is None or value == "":
            if default is not None or not required:
                return default
            return int(self.require(key))  # raises the missing-key error
        return parse_int(self.path, key, value)

    def int_list(self, key: str) -> list[int]:
        return parse_int_list(self.path, key, self.require(key))


def parse_int(path, key: str, value: str) -> int:
    """An integer value, exactly (Python ints: header sizes beyond int64 stay exact so that
    the size check can report them); ``3.0`` is accepted as 3."""
    try:
        return int(value.strip())
    except ValueError:
        pass
    try:
        f = float(value.strip())
    except ValueError:
        raise BadInputError(path, f"cannot parse '{key} := {value}' as an integer") from None
    if not f.is_integer():  # also nan and inf
        raise BadInputError(path, f"'{key} := {value}' is not a whole number")
    return int(f)


def parse_int_list(path, key: str, value: str) -> list[int]:
    """``{1, 2, 3}`` (or a single number) -> [1, 2, 3]."""
    s = value.strip()
    if s.startswith("{"):
        if not s.endswith("}"):
            raise BadInputError(path, f"'{key}' list is not closed with '}}'")
        s = s[1:-1]
    items = [x for x in (p.strip() for p in s.split(",")) if x]
    if not items:
        raise BadInputError(path, f"'{key}' is an empty list")
    return [parse_int(path, key, x) for x in items]


def resolve_data_file(path: Path, name: str) -> Path:
    """The data file a header names, beside the header. Scanner tools keep the acquisition's
    file name (and Windows folders) in the header, so when that file is not there a renamed
    pair is accepted: ``x.s`` for ``x.s.hdr``, ``x.s`` for ``x.hs``."""
    base = re.split(r"[\\/]", name.strip())[-1]
    named = path.parent / base
    if named.exists():
        return named
    lower = path.name.lower()
    if lower.endswith(".hdr"):
        candidates = [path.with_name(path.name[:-4])]
    elif lower.endswith(".hs"):
        candidates = [path.with_name(path.name[:-3] + ".s")]
    else:
        candidates = []
    return next((c for c in candidates if c.is_file()), named)


def format_list(values) -> str:
    return "{" + ",".join(str(int(v)) for v in values) + "}"


def merge_keys(old: dict, new: list[tuple[str, str]], drop: set[str], end_key: str) -> str:
    """Header text: the old keys in their order with values from ``new`` where the normalised
    key matches, keys whose normalised form is in ``drop`` removed, the remaining new keys
    inserted before ``end_key`` (which stays last), the Interfile start key first.
    """
    new_by_norm = {norm_key(k): (k, v) for k, v in new}
    used: set[str] = set()
    lines: list[tuple[str, str]] = []
    for key, value in old.items():
        n = norm_key(key)
        if n in drop or n == norm_key(end_key) or n == "interfile":
            continue
        if n in new_by_norm:
            lines.append((key, new_by_norm[n][1]))
            used.add(n)
        else:
            lines.append((key, value))
    start = [(k, v) for k, v in new if norm_key(k) == "interfile"] or [("!INTERFILE", "")]
    used.add("interfile")
    extra = [(k, v) for k, v in new if norm_key(k) not in used]
    lines = start + lines + extra + [(end_key, "")]
    return "".join(f"{k} := {v}\n" if v != "" else f"{k} :=\n" for k, v in lines)
