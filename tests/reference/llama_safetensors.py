"""Minimal safetensors reader/writer for the PyTorch reference scripts.

Debian's python3-torch (1.13) ships without the `safetensors` package, so the format is handled
here: an 8-byte little-endian header length, a JSON header (padded with spaces to a multiple of
8) mapping names to dtype, shape and data offsets relative to the data section, then the raw
little-endian tensor bytes.
"""
import json
import struct

import numpy as np
import torch

_NUMPY_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
}
_NAMES = {np.dtype(v): k for k, v in _NUMPY_DTYPES.items()}


def read_safetensors(path):
    """Returns ({name: torch tensor}, metadata dict). BF16 is widened to float32."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len :]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        shape = info["shape"]
        if info["dtype"] == "BF16":
            halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = halves.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=_NUMPY_DTYPES[info["dtype"]])
        tensors[name] = torch.from_numpy(array.reshape(shape).copy())
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: torch tensor or numpy array} in name order, contiguous from offset 0."""
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    header["__metadata__"].setdefault("format", "pt")
    chunks = []
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        raw = array.tobytes()
        header[name] = {
            "dtype": _NAMES[np.dtype(array.dtype.str.replace(">", "<"))],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in chunks:
            f.write(raw)
