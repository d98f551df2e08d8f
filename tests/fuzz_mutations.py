"""Hypothesis strategies that damage a valid file, for the reader fuzzing (tests/test_fuzz_readers.py).

A mutation is a function ``(path) -> None`` that rewrites one file in place (or replaces it with
something that is no file). :func:`mutations` draws one for a file by its suffix: generic byte damage
(truncation, bit flips, random bytes, an empty file, a folder or a dangling link in its place) for
every file, plus damage that knows the format: NIfTI header fields (huge, negative or NaN dims,
datatype, vox_offset, scl_slope), ``.npy`` headers (shape, dtype, byte order), tables (a column
dropped or repeated, another delimiter, non-UTF-8 bytes, ids with ``..``, ``/``, NUL or RTL marks,
NaN / inf / huge numbers), YAML (anchors and aliases, deep nesting, foreign tags) and JSON (deep
nesting, another type), and the records of a ``torch.save`` zip (its pickle or a tensor's bytes
rewritten with their CRC recomputed, so the damage reaches the unpickler).
"""

from __future__ import annotations

import ast
import gzip
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import strategies as st

Mutation = Callable[[Path], None]

#: Text that a table cell, an id or a YAML value should never smuggle through.
TRICKY_TEXT = ("..", "../../etc/passwd", "/abs/path", "a/b", "\x00", "\u202e0001", "\u200b", "nan", "inf",
               "-inf", "1e999", "-1", "", " ", '"', "'", "\\", "\ufeff", "sub-\u00e9", "\U0001f9e0",
               "0" * 400, "9" * 40, "\r", "\n", "\t", "NULL", "None", "~", "true", "- x", "{a: 1}")
TRICKY = st.sampled_from(TRICKY_TEXT) | st.text(max_size=12)
#: Values a NIfTI header field or an ``.npy`` shape should never be trusted with.
HUGE = st.sampled_from([0, -1, -32768, 32767, 2**31 - 1, -(2**31), 2**15, 7, 1])


def _rewrite(function: Callable[[bytes], bytes]) -> Mutation:
    def apply(path: Path) -> None:
        path.write_bytes(function(path.read_bytes()))
    return apply


@st.composite
def byte_damage(draw) -> Mutation:
    """Truncation, bit flips, overwritten or inserted bytes, an empty file, or no file at all."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "empty", "folder", "link", "gone"]))
    if kind in ("folder", "link", "gone"):
        def replace(path: Path) -> None:
            path.unlink()
            if kind == "folder":
                path.mkdir()
            elif kind == "link":
                path.symlink_to(path.with_name("nowhere"))
        return replace
    fraction = draw(st.floats(0, 1))
    noise = draw(st.binary(min_size=1, max_size=16))
    flips = draw(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), min_size=1, max_size=4))

    def damage(data: bytes) -> bytes:
        at = min(int(fraction * len(data)), max(len(data) - 1, 0))
        if kind == "truncate":
            return data[:at]
        if kind == "empty":
            return b""
        if kind == "insert":
            return data[:at] + noise + data[at:]
        if kind == "overwrite":
            return data[:at] + noise + data[at + len(noise):]
        out = bytearray(data)
        for where, bit in flips:
            if out:
                out[min(int(where * len(out)), len(out) - 1)] ^= 1 << bit
        return bytes(out)
    return _rewrite(damage)


# ------------------------------------------------------------------------------------------ NIfTI
#: NIfTI-1 header fields: (byte offset, struct format) (nifti1.h).
NIFTI_FIELDS = {"sizeof_hdr": (0, "i"), "dim0": (40, "h"), "dim1": (42, "h"), "dim2": (44, "h"),
                "dim3": (46, "h"), "dim4": (48, "h"), "datatype": (70, "h"), "bitpix": (72, "h"),
                "pixdim1": (80, "f"), "vox_offset": (108, "f"), "scl_slope": (112, "f"),
                "scl_inter": (116, "f"), "qform_code": (252, "h"), "sform_code": (254, "h"),
                "quatern_b": (256, "f"), "srow_x0": (280, "f")}


@st.composite
def nifti_damage(draw) -> Mutation:
    """One or more header fields set to a huge, negative, zero or NaN value (inside the gzip if any)."""
    edits = draw(st.lists(st.tuples(st.sampled_from(sorted(NIFTI_FIELDS)),
                                    HUGE | st.sampled_from([float("nan"), float("inf"), 1e30])),
                          min_size=1, max_size=3))

    def damage(data: bytes, gz: bool) -> bytes:
        raw = bytearray(gzip.decompress(data) if gz else data)
        for name, value in edits:
            offset, fmt = NIFTI_FIELDS[name]
            if fmt in "hi":  # integer fields: NaN / inf / 1e30 stand for -1
                value = int(value) if value == value and abs(value) < 2**15 else -1
            if len(raw) >= offset + struct.calcsize(fmt):
                struct.pack_into("<" + fmt, raw, offset, value)
        return gzip.compress(bytes(raw), mtime=0) if gz else bytes(raw)

    def apply(path: Path) -> None:
        path.write_bytes(damage(path.read_bytes(), path.name.endswith(".gz")))
    return apply


# -------------------------------------------------------------------------------------------- npy
@st.composite
def npy_damage(draw) -> Mutation:
    """The ``.npy`` header's dict rewritten: another shape, dtype, byte order or Fortran order."""
    descr = draw(st.sampled_from(["|O", "<c8", "|b1", ">f4", "<f2", "<i8", "|u1", "<U3", "|V4", "<f8", "<M8[s]"]))
    shape = draw(st.lists(HUGE, max_size=6).map(tuple))
    fortran = draw(st.booleans())
    which = draw(st.sets(st.sampled_from(["descr", "shape", "fortran"]), min_size=1))

    def damage(data: bytes) -> bytes:
        if not data.startswith(b"\x93NUMPY") or len(data) < 10:
            return data
        size = struct.unpack("<H", data[8:10])[0] if data[6] == 1 else struct.unpack("<I", data[8:12])[0]
        start = 10 if data[6] == 1 else 12
        try:
            fields = ast.literal_eval(data[start:start + size].decode("latin1"))
        except (ValueError, SyntaxError):
            return data
        fields.update({"descr": descr} if "descr" in which else {})
        fields.update({"shape": shape} if "shape" in which else {})
        fields.update({"fortran_order": fortran} if "fortran" in which else {})
        text = repr(fields).encode("latin1")
        text += b" " * (-(start + len(text) + 1) % 64) + b"\n"
        return data[:8] + struct.pack("<H" if start == 10 else "<I", len(text)) + text + data[start + size:]
    return _rewrite(damage)


# ------------------------------------------------------------------------------------ text tables
@st.composite
def table_damage(draw, delimiter: str) -> Mutation:
    """A column dropped or repeated, another delimiter, non-UTF-8 bytes, tricky cells, a ragged row."""
    kind = draw(st.sampled_from(["drop", "repeat", "delimiter", "latin1", "cell", "ragged", "bom", "crlf",
                                 "quote", "header-only", "rows"]))
    column, row = draw(st.integers(0, 200)), draw(st.integers(0, 50))
    cell = draw(TRICKY)
    other = draw(st.sampled_from([",", ";", " ", "|", "\t"]))

    def damage(data: bytes) -> bytes:
        text = data.decode("utf-8", errors="surrogateescape")
        lines = text.splitlines()
        if not lines:
            return data
        grid = [line.split(delimiter) for line in lines]
        r, c = row % len(grid), column % len(grid[0])
        if kind == "drop":
            grid = [fields[:c] + fields[c + 1:] for fields in grid]
        elif kind == "repeat":
            grid = [fields + fields[c:c + 1] for fields in grid]
        elif kind == "cell" and c < len(grid[r]):
            grid[r][c] = cell
        elif kind == "ragged":
            grid[r] = grid[r] + [cell]
        elif kind == "header-only":
            grid = grid[:1]
        elif kind == "rows":
            grid = grid + grid[1:] * 3  # every id repeated
        sep = other if kind == "delimiter" else delimiter
        out = "\n".join(sep.join(fields) for fields in grid) + "\n"
        if kind == "crlf":
            out = out.replace("\n", "\r\n")
        if kind == "quote":
            out = out.replace(sep, sep + '"', 1)
        encoded = out.encode("utf-8", errors="surrogateescape")
        if kind == "latin1":
            encoded = out.encode("utf-8", errors="surrogateescape").replace(b"e", b"\xe9", 1) + b"\xff\xfe"
        if kind == "bom":
            encoded = b"\xef\xbb\xbf" + encoded
        return encoded
    return _rewrite(damage)


# -------------------------------------------------------------------------------------- YAML/JSON
#: Damaging YAML documents, each a few hundred bytes at most but some expensive to load.
YAML_BOMBS = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    "a: &x {b: 1}\nc: *x\n", "a: *undefined\n", "!!python/object/apply:os.system ['true']\n",
    "a: !!binary aGVsbG8=\n", "a: 2024-01-01\n", "a: !!set {x, y}\n", "? [a, b]\n: 1\n", "a: 1\na: 2\n",
    "- 1\n- 2\n", "just text\n", "a:\n\tb: 1\n", "%YAML 9.9\n---\na: 1\n", "a: 1\n---\nb: 2\n",
    "a: .nan\n", "a: .inf\n", "{a: [1, 2}\n", "\x00", "a: \ud800\n".encode("utf-8", "surrogatepass").decode("latin1"),
)


@st.composite
def yaml_damage(draw) -> Mutation:
    """A YAML bomb (anchors and aliases), deep nesting, a foreign tag, or a key's value replaced."""
    kind = draw(st.sampled_from(["bomb", "nest", "append", "value"]))
    bomb = draw(st.sampled_from(YAML_BOMBS))
    depth = draw(st.sampled_from([50, 500, 5000, 50000]))
    value = draw(TRICKY | st.sampled_from(["[]", "{}", "null", "-1", "1e309", "0x10", "[[[[[]]]]]", "*a"]))
    line = draw(st.integers(0, 400))

    def damage(data: bytes) -> bytes:
        if kind == "bomb":
            return bomb.encode("utf-8", errors="surrogateescape")
        if kind == "nest":
            return ("a: " + "[" * depth + "]" * depth + "\n").encode()
        if kind == "append":
            return data + bomb.encode("utf-8", errors="surrogateescape")
        lines = data.decode("utf-8", errors="surrogateescape").split("\n")
        keyed = [i for i, text in enumerate(lines) if ":" in text and not text.lstrip().startswith("#")]
        if keyed:
            i = keyed[line % len(keyed)]
            lines[i] = lines[i].split(":", 1)[0] + ": " + value.replace("\n", " ")
        return "\n".join(lines).encode("utf-8", errors="surrogateescape")
    return _rewrite(damage)


@st.composite
def json_damage(draw) -> Mutation:
    """Deep nesting, another top-level type, NaN, or a list replaced by something else."""
    text = draw(st.sampled_from(["[" * 100000 + "]" * 100000, "[]", "null", "1", '"x"', "NaN", '{"a": 1}',
                                 '{"desikan_roi": []}', '{"desikan_roi": {"channels": 5, "features": "x"}}',
                                 '{"desikan_roi": {"channels": [null, {}], "features": [[]]}}',
                                 '{"a": 1, "a": 2}', '{"x": "float64", "y": "no-such-dtype"}',
                                 '{"participant_id": "category", "age": "datetime64[ns]"}',
                                 '{"age": "int8", "site": "bool"}', "\ufeff{}"]))
    return _rewrite(lambda data: text.encode("utf-8", errors="surrogatepass"))


# ------------------------------------------------------------------------------------ checkpoints
@st.composite
def zip_record_damage(draw) -> Mutation:
    """One record of a zip rewritten (pickle opcodes damaged, a tensor's bytes cut), CRCs recomputed."""
    index, inner = draw(st.integers(0, 50)), draw(byte_damage())
    pickle_ops = draw(st.binary(min_size=1, max_size=24))

    def apply(path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            records = [(info, archive.read(info)) for info in archive.infolist()]
        if not records:
            return
        target = index % len(records)
        scratch = path.with_name(path.name + ".record")
        scratch.write_bytes(records[target][1])
        try:
            inner(scratch)
            damaged = scratch.read_bytes() if scratch.is_file() else pickle_ops
        finally:
            if scratch.is_symlink() or scratch.is_file():
                scratch.unlink()
            elif scratch.is_dir():
                scratch.rmdir()
        with zipfile.ZipFile(path, "w") as archive:
            for i, (info, data) in enumerate(records):
                archive.writestr(info, damaged if i == target else data)
    return apply


def mutations(path: Path) -> st.SearchStrategy[Mutation]:
    """Damage for the file ``path``, chosen by its suffix (generic byte damage for any file)."""
    name = path.name.lower()
    specific = {".nii": nifti_damage(), ".nii.gz": nifti_damage(), ".npy": npy_damage(),
                ".tsv": table_damage("\t"), ".csv": table_damage(","), ".yaml": yaml_damage(),
                ".json": json_damage(), ".txt": table_damage(","), ".pt": zip_record_damage()}
    for suffix, strategy in specific.items():
        if name.endswith(suffix):
            return st.one_of(byte_damage(), strategy, strategy)
    return byte_damage()
