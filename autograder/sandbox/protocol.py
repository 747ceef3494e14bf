"""The wire format between the trusted parent and a worker: one JSON object per line.

Invariants:

- Values are JSON with tagged objects (``$float``, ``$tuple``, ``$dict``, ``$tensor``,
  ``$ndarray``, ``$leaf``, ``$expr``, ``$other``, ``$toolarge``); arrays travel as base64 of their
  raw little-endian C-order bytes. Nothing is ever pickled, in either direction.
- This module imports no torch: the parent uses it as is. The worker's torch-aware encoder lives
  in ``worker.py`` and builds on ``array_payload`` below.
- Everything a worker sends is untrusted. ``loads`` and ``decode`` validate what they read and
  raise ``ProtocolError`` (never anything else) for malformed input; sizes are capped:
  a line at ``MAX_LINE_BYTES`` bytes, an array at ``MAX_ELEMENTS`` elements, nesting at
  ``MAX_DEPTH`` levels.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

import numpy as np

MAX_LINE_BYTES = 200 * 1024 * 1024   # one request or reply line, bytes
MAX_ELEMENTS = 10_000_000            # one array; bigger ones travel as {"$toolarge": ...}
MAX_DEPTH = 64                       # nesting of lists/tuples/dicts in one value
MAX_STR_CHARS = 1_000_000            # a returned str longer than this travels as $toolarge
MAX_DIMS = 32

# Wire dtype name -> numpy dtype of the bytes on the wire. bfloat16 has no numpy dtype: its raw
# 16-bit patterns travel as uint16 and the parent widens them to float32 (exact).
WIRE_DTYPES: dict[str, str] = {
    "float16": "<f2", "float32": "<f4", "float64": "<f8", "bfloat16": "<u2",
    "complex64": "<c8", "complex128": "<c16",
    "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint8": "u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "bool": "?",
}
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
REPLY_TAGS = ("$float", "$tuple", "$dict", "$tensor", "$ndarray", "$other", "$toolarge")


class ProtocolError(ValueError):
    """A message or value that does not follow this protocol."""


@dataclass(frozen=True)
class TensorMeta:
    """What a returned tensor was, besides its values. ``device`` is e.g. "cpu" or "cuda:0"."""
    dtype: str
    shape: tuple[int, ...]
    device: str
    requires_grad: bool
    grad_fn: bool              # the tensor has a grad_fn (it is connected to a graph)
    is_exact_tensor: bool      # type(t) is torch.Tensor (False for subclasses, e.g. Parameter)


@dataclass(frozen=True)
class Other:
    """A returned value the protocol does not carry: its type name and a short repr."""
    type: str
    repr: str


@dataclass(frozen=True)
class TooLarge:
    """A returned value over the size caps: its type name and shape (or length)."""
    type: str
    shape: tuple[int, ...]


# --- lines -------------------------------------------------------------------------------------

def dumps(msg: dict) -> bytes:
    """One message as one line (ASCII JSON + b"\\n"). ProtocolError if over MAX_LINE_BYTES."""
    try:
        text = json.dumps(msg, allow_nan=False, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"message cannot be encoded: {exc}") from None
    if len(text) + 1 > MAX_LINE_BYTES:
        raise ProtocolError(f"message of {len(text)} bytes is over the {MAX_LINE_BYTES}-byte cap")
    return text.encode("ascii") + b"\n"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):     # 1e999: no JSON number stands for it (``dumps`` refuses)
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def loads(line: bytes | bytearray | str) -> dict:
    """Parse one line into a message (a JSON object). ProtocolError for anything else, so also
    for NaN, Infinity and numbers out of float range: what ``loads`` accepts, ``dumps`` can send
    on."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError("line over the size cap")
    try:
        msg = json.loads(line, parse_constant=_reject_constant, parse_float=_finite)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {str(exc)[:200]}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    return msg


# --- arrays ------------------------------------------------------------------------------------

def array_payload(arr: np.ndarray, dtype_name: str | None = None) -> dict:
    """{"dtype", "shape", "data"} for a numpy array (copied to little-endian C order).

    ``dtype_name`` overrides the wire name (the worker sends bfloat16 bits as a uint16 array).
    """
    name = dtype_name or arr.dtype.name
    if name not in WIRE_DTYPES:
        raise ProtocolError(f"arrays of dtype {arr.dtype} cannot be sent")
    wire = np.dtype(WIRE_DTYPES[name])
    data = np.ascontiguousarray(arr, dtype=wire).tobytes()
    return {"dtype": name, "shape": [int(n) for n in arr.shape],
            "data": base64.b64encode(data).decode("ascii")}


def payload_array(p: object) -> np.ndarray:
    """The numpy array of a {"dtype", "shape", "data"} payload, validated; writable.

    bfloat16 comes back widened to float32 (exactly); every other dtype is kept.
    """
    if not isinstance(p, dict):
        raise ProtocolError("array payload must be an object")
    name, shape, data = p.get("dtype"), p.get("shape"), p.get("data")
    if not isinstance(name, str) or name not in WIRE_DTYPES:
        raise ProtocolError(f"unknown dtype {str(name)[:40]!r}")
    shape = check_shape(shape)
    if not isinstance(data, str):
        raise ProtocolError("array data must be a base64 string")
    wire = np.dtype(WIRE_DTYPES[name])
    count = math.prod(shape)
    if len(data) != 4 * ((count * wire.itemsize + 2) // 3):
        raise ProtocolError(f"array data has the wrong length for {name}{list(shape)}")
    try:
        raw = bytearray(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise ProtocolError("array data is not base64") from None
    if len(raw) != count * wire.itemsize:
        raise ProtocolError("array data has the wrong length")
    arr = np.frombuffer(raw, dtype=wire).reshape(shape)
    if name == "bfloat16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def check_shape(shape: object) -> tuple[int, ...]:
    """A validated shape: at most MAX_DIMS non-negative ints, at most MAX_ELEMENTS elements."""
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise ProtocolError("shape must be a list of at most 32 ints")
    if not all(type(n) is int and 0 <= n <= MAX_ELEMENTS for n in shape):
        raise ProtocolError("shape entries must be non-negative ints")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ProtocolError(f"array of shape {shape} is over the {MAX_ELEMENTS}-element cap")
    return tuple(shape)


def tensor_arg(arr: np.ndarray, requires_grad: bool = False) -> dict:
    """A request argument that the worker turns into a tensor on its own device."""
    p = array_payload(np.asarray(arr))
    p.update(requires_grad=bool(requires_grad), device="worker")
    return {"$tensor": p}


# --- values the parent sends -------------------------------------------------------------------

def encode(value, default=None, _depth: int = 0):
    """A request value as JSON. numpy arrays become ``$ndarray``, numpy scalars Python scalars.

    ``default(value)`` may encode other types (the proxy's ``Tensor`` inputs); it returns
    NotImplemented for types it does not know. Anything else raises ProtocolError.
    """
    if _depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if value is None or type(value) in (bool, int, str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
        if not isinstance(value, (bool, int, float, complex)):
            raise ProtocolError(f"cannot send a numpy {type(value).__name__} scalar")
    if isinstance(value, float):
        value = float(value)
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, np.ndarray):
        return {"$ndarray": array_payload(value)}
    if isinstance(value, list):
        return [encode(v, default, _depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, default, _depth + 1) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ProtocolError("only dicts with str keys can be sent")
        return {"$dict": {k: encode(v, default, _depth + 1) for k, v in value.items()}}
    if default is not None:
        out = default(value)
        if out is not NotImplemented:
            return out
    raise ProtocolError(f"cannot send a {type(value).__name__}")


# --- values the parent receives ----------------------------------------------------------------

def decode(obj, _depth: int = 0):
    """(value, meta) of a reply value. Tensors become numpy arrays with a TensorMeta.

    ``meta`` mirrors containers: a tuple of metas for a tuple, a list for a list, a dict for a
    dict, a TensorMeta for a tensor and None for anything else.
    """
    if _depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj, None
    if type(obj) is list:
        pairs = [decode(v, _depth + 1) for v in obj]
        return [v for v, _ in pairs], [m for _, m in pairs]
    if type(obj) is not dict or len(obj) != 1:
        raise ProtocolError("a value object must have exactly one tag")
    (tag, body), = obj.items()
    if tag == "$float":
        if body not in _NONFINITE:
            raise ProtocolError("$float must be nan, inf or -inf")
        return _NONFINITE[body], None
    if tag == "$tuple":
        if type(body) is not list:
            raise ProtocolError("$tuple must hold a list")
        pairs = [decode(v, _depth + 1) for v in body]
        return tuple(v for v, _ in pairs), tuple(m for _, m in pairs)
    if tag == "$dict":
        if type(body) is not dict:
            raise ProtocolError("$dict must hold an object")
        items = {k: decode(v, _depth + 1) for k, v in body.items()}
        return {k: v for k, (v, _) in items.items()}, {k: m for k, (_, m) in items.items()}
    if tag == "$tensor":
        arr = payload_array(body)
        return arr, _tensor_meta(body, arr)
    if tag == "$ndarray":
        return payload_array(body), None
    if tag == "$other":
        if type(body) is not dict or not all(isinstance(body.get(k), str)
                                             for k in ("type", "repr")):
            raise ProtocolError("$other must have str type and repr")
        return Other(body["type"][:200], body["repr"][:200]), None
    if tag == "$toolarge":
        if type(body) is not dict or not isinstance(body.get("type"), str):
            raise ProtocolError("$toolarge must have a str type")
        shape = body.get("shape", [])
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or \
                not all(type(n) is int and n >= 0 for n in shape):
            raise ProtocolError("$toolarge shape must be a list of ints")
        return TooLarge(body["type"][:200], tuple(shape)), None
    raise ProtocolError(f"unknown tag {str(tag)[:40]!r}")


def _tensor_meta(body: dict, arr: np.ndarray) -> TensorMeta:
    flags: dict = {k: body.get(k) for k in ("requires_grad", "grad_fn", "is_exact_tensor")}
    if not all(type(v) is bool for v in flags.values()):
        raise ProtocolError("$tensor flags must be booleans")
    device = body.get("device")
    if not isinstance(device, str) or len(device) > 40:
        raise ProtocolError("$tensor device must be a short string")
    return TensorMeta(dtype=body["dtype"], shape=tuple(body["shape"]), device=device, **flags)


def decode_error(err: object) -> dict:
    """The ``error`` object of a failed reply, with str fields of bounded length."""
    if not isinstance(err, dict):
        raise ProtocolError("error must be an object")
    out: dict = {}
    for key, cap in (("type", 200), ("message", 4000), ("trace", 8000), ("stage", 40)):
        v = err.get(key, "")
        out[key] = v[:cap] if isinstance(v, str) else ""
    out["in_student_code"] = err.get("in_student_code") is True
    return out
