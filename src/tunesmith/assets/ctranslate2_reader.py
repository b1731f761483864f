"""Read CTranslate2's `model.bin` (a flat file of named arrays) without depending on CTranslate2.

The layout is the one `ModelSpec._serialize` writes (python/ctranslate2/specs/model_spec.py) and
`Model::load` reads (src/models/model.cc), little-endian throughout:

    u32 binary version (1..6)
    [version >= 2] string spec name, u32 spec revision
    u32 variable count, then per variable:
        string name, u8 rank, rank x u32 dims,
        [version >= 4] u8 dtype id, u32 byte count   [older] u8 item size, u32 element count
        the raw bytes
    [version >= 3] u32 alias count, then per alias: string alias, string target

where a string is a u16 length (counting its trailing NUL), the UTF-8 bytes and the NUL.
Rank-0 variables are the spec's attributes (head counts, flags, activation ids); the others
are weights. Arrays keep the file's dtype (fp16 stays fp16) until the caller converts them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TunesmithError

NEWEST_BINARY_VERSION = 6  # the newest layout CTranslate2 writes; a later one may move fields
# ids of the DataType enum in include/ctranslate2/types.h; bfloat16 has no numpy dtype, so its
# 16-bit words are widened to float32 on read (exact: bf16 is the top half of a float32)
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"), 5: "bfloat16"}
LEGACY_DTYPES = {4: np.dtype("<f4"), 2: np.dtype("<i2"), 1: np.dtype("i1")}  # binary versions < 4 stored only the item size


@dataclass
class CTranslate2Model:
    """The contents of one model.bin: weights by name, the spec's scalar attributes, and where it came from."""

    spec: str  # e.g. "WhisperSpec"; "" for binary version 1, which did not record it
    revision: int
    binary_version: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # aliases resolved: both names hold the array
    attributes: dict[str, int | float] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> the variable it shares (tied weights)


class _Cursor:
    """Reads little-endian fields from a buffer, naming the file when it ends early."""

    def __init__(self, data: memoryview, source: str):
        self.data, self.source, self.pos = data, source, 0

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise TunesmithError(f"{self.source} is not a complete CTranslate2 model.bin (it ends at byte {len(self.data)}, "
                                 f"inside a field that needs {size} bytes at byte {self.pos}); download the model again.")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def string(self) -> str:
        (length,) = self.unpack("H")
        return bytes(self.take(length)).split(b"\0", 1)[0].decode("utf-8")


def read_ctranslate2_model(source: Path | bytes, name: str | None = None) -> CTranslate2Model:
    """Parse a CTranslate2 model.bin given as a path or as its bytes (`name` says where the bytes came from)."""
    if isinstance(source, (str, Path)):
        name = name or str(source)
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise TunesmithError(f"Could not read the CTranslate2 model {name} ({exc.strerror or exc}).") from None
    cursor = _Cursor(memoryview(source), name or "the CTranslate2 model.bin")

    version = cursor.u32()
    if not 1 <= version <= NEWEST_BINARY_VERSION:
        raise TunesmithError(f"{cursor.source} has CTranslate2 binary version {version}; this reader knows versions 1 to "
                             f"{NEWEST_BINARY_VERSION}. Convert the model with a CTranslate2 release that writes version {NEWEST_BINARY_VERSION}.")
    spec, revision = (cursor.string(), cursor.u32()) if version >= 2 else ("", 1)
    model = CTranslate2Model(spec=spec, revision=revision, binary_version=version)

    for _ in range(cursor.u32()):
        var_name = cursor.string()
        shape = cursor.unpack(f"{cursor.u8()}I")
        if version >= 4:
            type_id, num_bytes = cursor.u8(), cursor.u32()
            dtype = DTYPES.get(type_id)
        else:
            item_size, count = cursor.u8(), cursor.u32()
            dtype, num_bytes = LEGACY_DTYPES.get(item_size), count * item_size
            type_id = item_size
        if dtype is None:
            raise TunesmithError(f"{cursor.source}: variable '{var_name}' has a data type this reader does not know "
                                 f"(id {type_id}); only float32/16, bfloat16 and int8/16/32 are supported.")
        raw = cursor.take(num_bytes)
        array = _to_array(raw, dtype, shape, var_name, cursor.source)
        if array.ndim == 0:
            model.attributes[var_name] = array.item()
        else:
            model.arrays[var_name] = array

    if version >= 3:
        for _ in range(cursor.u32()):
            alias, target = cursor.string(), cursor.string()
            model.aliases[alias] = target
            # like Model::load: an alias shares its target, and the target's quantization scale if it has one
            for suffix in ("", "_scale"):
                if target + suffix in model.arrays:
                    model.arrays[alias + suffix] = model.arrays[target + suffix]
    return model


def _to_array(raw: memoryview, dtype, shape: tuple[int, ...], var_name: str, source: str) -> np.ndarray:
    storage = np.dtype("<u2") if dtype == "bfloat16" else dtype
    count = int(np.prod(shape, dtype=np.int64))
    if count * storage.itemsize != len(raw):
        raise TunesmithError(f"{source}: variable '{var_name}' holds {len(raw)} bytes, not the {count * storage.itemsize} "
                             f"its shape {list(shape)} needs; the file is damaged, download the model again.")
    # a view into the file's bytes: no copy until the caller converts the dtype
    array = np.frombuffer(raw, dtype=storage, count=count).reshape(shape)
    if dtype == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def float32_weights(model: CTranslate2Model, prefixes: tuple[str, ...] = ("",)) -> dict[str, np.ndarray]:
    """The weights whose names start with one of `prefixes`, as float32; int8/int16 weights are
    dequantized with their `<name>_scale`, and the scales dropped.

    CTranslate2 quantizes per output row (int8: value * scale[row]) or per tensor (int16), so the
    float weight is the stored integer divided by its scale.
    """
    out = {}
    for name, array in model.arrays.items():
        if not name.startswith(prefixes) or (name.endswith("_scale") and name[:-len("_scale")] in model.arrays):
            continue
        scale = model.arrays.get(name + "_scale", model.attributes.get(name + "_scale"))
        if array.dtype.kind == "i" and scale is not None:
            scale = np.asarray(scale, dtype=np.float32)
            array = array.astype(np.float32) / (scale.reshape(-1, *([1] * (array.ndim - 1))) if scale.ndim else scale)
        out[name] = array.astype(np.float32)
    return out
