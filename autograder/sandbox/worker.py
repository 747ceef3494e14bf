"""The worker: the only process that runs student code. It runs inside the sandbox.

    python -I .../autograder/sandbox/worker.py --fds R,W [--zygote]

Invariants:

- Requests are read from fd 3 and replies written to fd 4 (the descriptors given by ``--fds``
  are moved there first); fd 1 and 2 are the capture pipe the parent drains, so student prints
  never reach the protocol. Every other inherited descriptor is closed before torch is imported.
- Student code runs only inside ``Server._student`` (cells, calls, harness runs); every
  BaseException it raises becomes an error reply whose trace lists student frames only (frames
  from files named ``<cell ID>``). The worker never writes a result or score.
- The worker imports only ``autograder.sandbox.protocol``, ``autograder.sandbox.process_tree``
  and, lazily, ``autograder.harness.*`` (the zygote also ``backends`` and ``cleanup``).
- With ``--zygote`` the process imports torch, runs no torch computation and no student code,
  and forks one child per ``fork`` request; each child serves one submission like a plain worker.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file under ``python -I``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import builtins
import ctypes
import importlib
import inspect
import linecache
import math
import random
import re
import signal
import socket
import stat
import time
import traceback

from autograder.sandbox import protocol
from autograder.sandbox.process_tree import descendants
from autograder.sandbox.protocol import ProtocolError

REQ_FD, REP_FD = 3, 4
RECURSION_LIMIT = 4000        # deep enough for a recursive GAE over a few thousand steps
CELL_FILENAME = "<cell {}>"
MAX_TRACE_FRAMES = 8
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SANDBOX_UID_MIN = 1_000_000_000   # the sandbox uids start above this (see backends.py)

torch = None  # imported in main(), after the descriptors are cleaned up
np = None
T = None      # Pristine: torch's and numpy's own functions, taken before any student code runs


class BadRequest(Exception):
    """A request the parent should never have sent (a bug in the kit, not in student code)."""


class CellTimeout(Exception):
    """A cell ran past its time limit while loading."""


# --- descriptors and process set-up ----------------------------------------------------------

def setup_fds(rfd: int, wfd: int, out: int | None = None) -> None:
    """Move the request/reply descriptors to 3/4 (and ``out``, if given, to 1 and 2); close
    every other descriptor from 3 up. Safe whatever numbers the given descriptors have."""
    import fcntl

    given = [rfd, wfd] + ([out] if out is not None else [])
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in given]
    for fd in set(given) - {0, 1, 2}:
        os.close(fd)
    os.dup2(moved[0], REQ_FD, inheritable=False)
    os.dup2(moved[1], REP_FD, inheritable=False)
    if out is not None:
        os.dup2(moved[2], 1)
        os.dup2(moved[2], 2)
    os.closerange(REP_FD + 1, 1 << 16)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg: int = 0) -> int:
    return _libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


PR_SET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 3, 4, 36


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class LineReader:
    """Lines from a descriptor; consumed bytes are dropped from the buffer at once. On a socket
    (the trusted worker's request channel) descriptors sent with the bytes are kept in ``fds``
    (oldest first) until ``take_fds``."""

    MAX_FDS = 4      # descriptors kept at once; more are closed on arrival

    def __init__(self, fd: int):
        self.fd, self.buf, self.scanned = fd, bytearray(), 0
        self.fds: list[int] = []
        self.sock = None
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            self.sock = socket.socket(fileno=os.dup(fd))

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds

    def _read(self) -> bytes:
        if self.sock is None:
            return os.read(self.fd, 1 << 20)
        data, fds = recv_fds(self.sock, self.MAX_FDS, bufsize=1 << 20)
        for fd in fds:
            if len(self.fds) < self.MAX_FDS:
                self.fds.append(fd)
            else:
                os.close(fd)
        return data

    def readline(self) -> bytes | None:
        while True:
            i = self.buf.find(b"\n", self.scanned)
            if i >= 0:
                line = bytes(self.buf[:i])
                self.buf[:i + 1] = b""
                self.scanned = 0
                return line
            self.scanned = len(self.buf)
            if len(self.buf) > protocol.MAX_LINE_BYTES:
                raise ProtocolError("request line over the size cap")
            chunk = self._read()
            if not chunk:
                return None
            self.buf += chunk


# --- values: worker side ---------------------------------------------------------------------

class Pristine:
    """The functions the worker reads tensors and arrays with, taken in ``main()`` before any
    student code runs: C-level accessors of ``torch._C.TensorBase`` (called with subclass
    ``__torch_function__`` disabled), numpy's and binascii's encoders, ``math.isfinite``. A
    submission that patches ``torch.Tensor`` (``numpy``, ``tolist``, ``dtype``, ``grad``, ...),
    numpy or the builtins changes what its own code computes, never what the worker reports
    about the values it returned.
    """

    GETTERS = ("dtype", "shape", "device", "layout", "is_quantized", "requires_grad", "grad_fn",
               "grad")
    METHODS = ("detach", "resolve_conj", "resolve_neg", "cpu", "contiguous", "numpy", "view",
               "numel", "as_subclass")

    def __init__(self, torch_module, numpy_module):
        import binascii
        import builtins as b

        base = torch_module._C.TensorBase.__dict__
        self.get = {name: base[name].__get__ for name in self.GETTERS}
        for name in self.METHODS:
            setattr(self, name, base[name])
        self.no_subclass = torch_module._C.DisableTorchFunctionSubclass
        self.Tensor, self.strided = torch_module.Tensor, torch_module.strided
        self.bfloat16, self.int16 = torch_module.bfloat16, torch_module.int16
        self.ndarray, self.generic = numpy_module.ndarray, numpy_module.generic
        self.asarray, self.ascontiguous = numpy_module.asarray, numpy_module.ascontiguousarray
        self.np_dtype, self.uint16 = numpy_module.dtype, numpy_module.uint16
        self.b64 = binascii.b2a_base64
        self.isfinite = math.isfinite
        self.isinstance, self.type, self.repr, self.str = b.isinstance, b.type, b.repr, b.str
        self.len, self.abs, self.all, self.list = b.len, b.abs, b.all, b.list

    def payload(self, arr, dtype_name: str | None = None) -> dict:
        """``protocol.array_payload`` with the functions taken at start-up."""
        name = dtype_name or arr.dtype.name
        if name not in protocol.WIRE_DTYPES:
            raise ProtocolError(f"arrays of dtype {arr.dtype} cannot be sent")
        data = self.ascontiguous(arr, dtype=self.np_dtype(protocol.WIRE_DTYPES[name])).tobytes()
        return {"dtype": name, "shape": [int(n) for n in arr.shape],
                "data": self.b64(data, newline=False).decode("ascii")}

def encode_value(value, _depth: int = 0):
    """A returned value as JSON (tensors with their meta). Never raises."""
    try:
        return _encode(value, _depth)
    except BaseException as exc:  # a value whose encoding fails travels as $other
        return _other(value, note=f"<could not be encoded: {type(exc).__name__}>")


def _other(value, note: str | None = None) -> dict:
    try:
        text = note or T.repr(value)
    except BaseException:
        text = "<repr failed>"
    return {"$other": {"type": T.str(T.type(value).__name__)[:200], "repr": T.str(text)[:200]}}


def _encode(v, depth: int):
    if depth > protocol.MAX_DEPTH:
        return _other(v, note="<nested too deeply>")
    t = T.type(v)
    if v is None or t is bool:
        return v
    if t is int:
        return v if T.abs(v) < 1 << 1000 else _other(v, note="<int too large>")
    if t is float:
        return v if T.isfinite(v) else {"$float": float.__repr__(v)}
    if t is str:
        return v if T.len(v) <= protocol.MAX_STR_CHARS else \
            {"$toolarge": {"type": "str", "shape": [T.len(v)]}}
    if T.isinstance(v, T.Tensor):
        return encode_tensor(v)
    if T.isinstance(v, T.ndarray) or T.isinstance(v, T.generic):
        arr = T.asarray(v)
        if arr.dtype.name not in protocol.WIRE_DTYPES or arr.dtype.name == "bfloat16":
            return _other(v)
        if arr.size > protocol.MAX_ELEMENTS:
            return {"$toolarge": {"type": "ndarray", "shape": T.list(arr.shape)}}
        return {"$ndarray": T.payload(arr)}
    if t is list:
        return [_encode(x, depth + 1) for x in v]
    if t is tuple:
        return {"$tuple": [_encode(x, depth + 1) for x in v]}
    if T.isinstance(v, tuple):  # subclasses (NamedTuple, ...) travel as tuples; read with
        return {"$tuple": [_encode(tuple.__getitem__(v, i), depth + 1)  # tuple's own methods
                           for i in range(tuple.__len__(v))]}
    if t is dict and T.all(T.type(k) is str for k in v):
        return {"$dict": {k: _encode(x, depth + 1) for k, x in v.items()}}
    if T.isinstance(v, int):  # subclasses (IntEnum, ...) travel as their base type
        return _encode(int.__int__(v), depth)
    if T.isinstance(v, float):
        return _encode(float.__float__(v), depth)
    if T.isinstance(v, str):
        return _encode(str.__str__(v), depth)
    return _other(v)


def encode_tensor(t) -> dict:
    """``$tensor`` (values copied to the CPU, detached) or ``$toolarge``/``$other``; read with
    torch's own accessors (``Pristine``), whatever the tensor's class or torch.Tensor overrides."""
    with T.no_subclass():
        layout, dtype, device = T.get["layout"](t), T.get["dtype"](t), T.get["device"](t)
        if layout != T.strided or T.get["is_quantized"](t) or device.type == "meta":
            return _other(t, note=f"<{layout} {dtype} tensor on {device}>")
        name = T.str(dtype).removeprefix("torch.")
        if name not in protocol.WIRE_DTYPES:
            return _other(t, note=f"<tensor of dtype {name}>")
        if T.numel(t) > protocol.MAX_ELEMENTS:
            return {"$toolarge": {"type": "Tensor", "shape": [int(n) for n in T.get["shape"](t)]}}
        body = T.payload(tensor_numpy(t), dtype_name=name)
        body.update(device=T.str(device), requires_grad=bool(T.get["requires_grad"](t)),
                    grad_fn=T.get["grad_fn"](t) is not None, is_exact_tensor=T.type(t) is T.Tensor)
    return {"$tensor": body}


def tensor_numpy(t) -> "np.ndarray":
    """The values of a strided tensor as a CPU numpy array (bfloat16 as its uint16 bits)."""
    with T.no_subclass():
        d = T.contiguous(T.cpu(T.resolve_neg(T.resolve_conj(T.detach(t)))))
        if T.type(d) is not T.Tensor:
            d = T.as_subclass(d, T.Tensor)
        if T.get["dtype"](d) == T.bfloat16:
            return T.numpy(T.view(d, T.int16)).view(T.uint16)
        return T.numpy(d)


def encode_rows(values: list):
    """Results of many calls as one float64 ``$ndarray`` with a row per call when each is a
    tensor, a number or a flat list of numbers, all of one length; else a list of encoded
    values. Read with the functions taken at start-up (``Pristine``)."""
    try:
        rows = []
        for v in values:
            if T.isinstance(v, T.Tensor):
                row = tensor_numpy(v).reshape(-1)
            elif T.type(v) in (int, float) or (T.type(v) in (list, tuple) and T.all(
                    T.type(x) in (int, float) for x in v)):
                row = T.asarray(v, dtype="float64").reshape(-1)
            else:
                raise TypeError
            if row.dtype.kind not in "fiub" or (rows and row.shape != rows[0].shape):
                raise TypeError
            rows.append(row)
        if rows:
            stacked = T.ascontiguous([r.astype("float64") for r in rows], dtype="float64")
            return {"$ndarray": T.payload(stacked)}
    except BaseException:
        pass
    return [encode_value(v) for v in values]


def tensor_grad(t):
    """The ``.grad`` of a leaf tensor, read with torch's own accessor."""
    with T.no_subclass():
        return T.get["grad"](t)


def fingerprint(v, depth: int = 0):
    """A comparable snapshot of an argument's contents (to detect in-place changes)."""
    if depth > protocol.MAX_DEPTH:
        return ("deep", id(v))
    if T.isinstance(v, T.Tensor):
        with T.no_subclass():
            return ("t", T.str(T.get["dtype"](v)), tuple(T.get["shape"](v)),
                    tensor_numpy(v).tobytes())
    if T.isinstance(v, T.ndarray):
        return ("a", v.dtype.str, v.shape, v.tobytes())
    if T.type(v) is float:
        return ("f", v.hex())
    if T.type(v) in (list, tuple):
        return (T.type(v).__name__, tuple(fingerprint(x, depth + 1) for x in v))
    if T.type(v) is dict:
        return ("d", tuple((T.repr(k), fingerprint(x, depth + 1)) for k, x in v.items()))
    if v is None or T.type(v) in (bool, int, str):
        return ("s", v)
    return ("o", id(v))


def safe_fingerprint(v):
    """fingerprint, or a fresh object (compares unequal) when student code broke the value."""
    try:
        return fingerprint(v)
    except BaseException:
        return object()


class Builder:
    """Turns request values into Python/numpy/torch objects on the worker's device."""

    def __init__(self, device: str, leaves: dict):
        self.device, self.leaves = device, leaves

    def tensor(self, body) -> "torch.Tensor":
        arr = protocol.payload_array(body)
        if body["dtype"] == "bfloat16":
            t = torch.from_numpy(arr).to(torch.bfloat16)
        else:
            t = torch.from_numpy(arr)
        t = t.to(self.device)
        if body.get("requires_grad"):
            if not (t.is_floating_point() or t.is_complex()):
                raise BadRequest(f"requires_grad on a {t.dtype} tensor")
            t.requires_grad_(True)
        return t

    def value(self, obj, depth: int = 0):
        if depth > protocol.MAX_DEPTH:
            raise BadRequest("value nested too deeply")
        if obj is None or type(obj) in (bool, int, float, str):
            return obj
        if type(obj) is list:
            return [self.value(x, depth + 1) for x in obj]
        if type(obj) is not dict or len(obj) != 1:
            raise BadRequest("value objects have exactly one tag")
        (tag, body), = obj.items()
        if tag == "$float":
            return float(body)
        if tag == "$tuple":
            return tuple(self.value(x, depth + 1) for x in body)
        if tag == "$dict":
            return {k: self.value(x, depth + 1) for k, x in body.items()}
        if tag == "$tensor":
            return self.tensor(body)
        if tag == "$ndarray":
            return protocol.payload_array(body)
        if tag == "$leaf":
            if body not in self.leaves:
                raise BadRequest(f"unknown leaf {body!r}")
            return self.leaves[body]
        if tag == "$expr":
            return self.expr(body)
        raise BadRequest(f"unknown tag {tag!r}")

    def expr(self, body: dict):
        if body.get("op") == "computed":   # leaf * 1: not a leaf, like a network's output
            leaf = self.leaves.get(body.get("of"))
            if leaf is None:
                raise BadRequest("computed needs a leaf")
            return leaf * 1
        if body.get("op") != "log_softmax_gather":
            raise BadRequest(f"unknown expression {body.get('op')!r}")
        logits = self.leaves.get(body.get("logits"))
        if logits is None:
            raise BadRequest("log_softmax_gather needs a logits leaf")
        index = body.get("index")
        logp = torch.log_softmax(logits, dim=-1)
        idx = torch.as_tensor(index, dtype=torch.long, device=logits.device)
        if logits.dim() == 1:
            return logp[idx]
        if logits.dim() == 2 and idx.dim() == 1 and idx.shape[0] == logits.shape[0]:
            return logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        raise BadRequest("log_softmax_gather: logits [K] with any index, or [B, K] with B indices")


# --- errors ----------------------------------------------------------------------------------

def _safe_str(x, cap: int) -> str:
    try:
        s = str(x)
    except BaseException:
        s = "<message could not be shown>"
    return s if len(s) <= cap else s[:cap] + " ..."


def student_frames(tb) -> list:
    return [(f, ln) for f, ln in traceback.walk_tb(tb)
            if f.f_code.co_filename.startswith("<cell ")]


def format_trace(frames: list) -> str:
    """Student frames as 'File "<cell X>", line N, in f' plus the source line; capped."""
    if len(frames) > MAX_TRACE_FRAMES:
        head, tail = frames[:3], frames[-(MAX_TRACE_FRAMES - 3):]
        skipped = len(frames) - len(head) - len(tail)
    else:
        head, tail, skipped = frames, [], 0
    lines = []
    for group in (head, tail):
        for f, lineno in group:
            code = f.f_code
            lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}')
            src = linecache.getline(code.co_filename, lineno).strip()
            if src:
                lines.append(f"    {src[:200]}")
        if group is head and skipped:
            lines.append(f"  ... {skipped} more frames ...")
    return "\n".join(lines)


def error_reply(exc: BaseException, stage: str) -> dict:
    frames = student_frames(exc.__traceback__)
    return {"ok": False, "error": {
        "type": type(exc).__name__[:200], "message": _safe_str(exc, 2000),
        "trace": format_trace(frames), "stage": stage, "in_student_code": bool(frames)}}


def kit_error(exc: BaseException) -> dict:
    """A failure of the worker itself (bad request, kit bug): the worker's own trace."""
    return {"ok": False, "error": {
        "type": type(exc).__name__, "message": _safe_str(exc, 2000), "stage": "worker",
        "trace": "".join(traceback.format_exception(exc))[-4000:], "in_student_code": False}}


def cell_error(cell_id: str, source: str, exc: BaseException) -> dict:
    if isinstance(exc, SyntaxError):
        line, message = exc.lineno, exc.msg
    else:
        frames = [ln for f, ln in student_frames(exc.__traceback__)
                  if f.f_code.co_filename == CELL_FILENAME.format(cell_id)]
        line, message = (frames[-1] if frames else None), _safe_str(exc, 1000)
    names = re.findall(r"^\s*(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", source, re.M)
    return {"cell": cell_id, "type": type(exc).__name__, "message": message, "line": line,
            "names": names}


def signature_text(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except BaseException:
        return "(...)"


# --- the server ------------------------------------------------------------------------------

class Server:
    """Serves one submission: load, call, harness, ping. Runs on the main thread."""

    def __init__(self):
        self.ns: dict = self.fresh_namespace()
        self.device = "cpu"
        self.reader = LineReader(REQ_FD)

    @staticmethod
    def fresh_namespace() -> dict:
        return {"__name__": "__main__", "__builtins__": builtins}

    def send(self, reply: dict) -> None:
        try:
            line = protocol.dumps(reply)
        except ProtocolError as exc:
            line = protocol.dumps({"id": reply.get("id"), "ok": False, "error": {
                "type": "ReplyTooLarge", "message": str(exc), "trace": "", "stage": "reply",
                "in_student_code": False}})
        write_all(REP_FD, line)

    def serve(self) -> None:
        while True:
            try:
                line = self.reader.readline()
            except ProtocolError as exc:
                self.send({"id": request_id(self.reader.buf), **kit_error(exc)})
                self.reader.buf.clear()
                continue
            if line is None:
                return
            try:
                msg = protocol.loads(line)
            except ProtocolError as exc:
                self.send({"id": request_id(line), **kit_error(exc)})
                continue
            del line
            self.send({"id": msg.get("id"), **self.handle(msg)})
            del msg
            flush_std()

    def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        handler = {"load": self.op_load, "call": self.op_call, "harness": self.op_harness,
                   "ping": self.op_ping, "map": self.op_map, "train": self.op_train,
                   "train_reply": self.op_train_reply}.get(op)
        try:
            if handler is None:
                raise BadRequest(f"unknown op {op!r}")
            return handler(msg)
        except BaseException as exc:  # the worker's own failure: report it, keep serving
            return kit_error(exc)

    def op_ping(self, msg: dict) -> dict:
        return {"ok": True, "pid": os.getpid()}

    def reset_state(self, seed) -> None:
        """Per-request state student code may have changed, then the seed (if given)."""
        sys.setrecursionlimit(RECURSION_LIMIT)
        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)
        if seed is not None:
            seed = int(seed)
            random.seed(seed)
            np.random.seed(seed % (1 << 32))
            # torch.manual_seed's CPU part; its lazy seeding of every other backend costs ~2 ms
            # per call, more than a whole training step
            torch.default_generator.manual_seed(seed % (1 << 64))
            if self.device == "cuda":
                torch.cuda.manual_seed_all(seed % (1 << 64))

    def op_load(self, msg: dict) -> dict:
        self.device, note = resolve_device(msg.get("device", "cpu"))
        self.ns = self.fresh_namespace()
        self.reset_state(msg.get("seed"))
        cell_timeout = float(msg.get("cell_timeout", 30))
        progress = bool(msg.get("progress"))
        errors = []
        for cell in msg.get("cells", []):
            cid, source = str(cell["id"]), str(cell["source"])
            if progress:  # the parent then knows which cell hung or ended the process
                flush_std()
                write_all(REP_FD, protocol.dumps({"id": msg.get("id"), "progress": cid}))
            filename = CELL_FILENAME.format(cid)
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            try:
                code = compile(source, filename, "exec", dont_inherit=True)
                with alarm(cell_timeout):
                    exec(code, self.ns)
            except BaseException as exc:
                errors.append(cell_error(cid, source, exc))
        defined = {}
        for name, obj in list(self.ns.items()):
            try:
                if name.startswith("__") or inspect.ismodule(obj) or not callable(obj):
                    continue
            except BaseException:
                continue
            defined[name] = signature_text(obj)
        return {"ok": True, "defined": defined, "cell_errors": errors, "device": self.device,
                "device_note": note}

    def function_of(self, msg: dict) -> tuple:
        """``(name, function, None)`` for the loaded function ``msg["fn"]`` names, else
        ``(name, None, the error reply)``."""
        name = msg.get("fn")
        fn = self.ns.get(name) if isinstance(name, str) else None
        if fn is None or not callable(fn):
            return name, None, {"ok": False, "error": {
                "type": "NotDefined", "stage": "call", "trace": "",
                "message": f"{name} is not defined", "in_student_code": False}}
        return name, fn, None

    def op_call(self, msg: dict) -> dict:
        name, fn, missing = self.function_of(msg)
        if missing:
            return missing
        leaves = {}
        builder = Builder(self.device, leaves)
        for lname, payload in (msg.get("leaves") or {}).items():
            if type(payload) is not dict or "$tensor" not in payload:
                raise BadRequest("leaves must be tensors")
            leaves[lname] = builder.tensor(payload["$tensor"])
        args = [builder.value(a) for a in msg.get("args", [])]
        kwargs = {k: builder.value(v) for k, v in (msg.get("kwargs") or {}).items()}
        named = dict(zip(self.names_of(fn, len(args)), args)) | kwargs
        before = {k: safe_fingerprint(v) for k, v in named.items()}
        backward = msg.get("backward")
        self.reset_state(msg.get("seed"))
        started = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            return error_reply(exc, "call")
        seconds = time.perf_counter() - started
        sys.setrecursionlimit(RECURSION_LIMIT)
        reply = {"ok": True, "value": encode_value(value), "grads": {}, "seconds": seconds,
                 "mutated": {k: safe_fingerprint(v) != before[k] for k, v in named.items()}}
        if msg.get("echo_args"):   # the arguments' contents after the call: the parent compares
            reply["args_after"] = {"args": [encode_value(a) for a in args],  # them with its own
                                   "kwargs": {k: encode_value(v) for k, v in kwargs.items()}}
        if backward:
            wrt = list(backward.get("wrt") or [])
            unknown = [w for w in wrt if w not in leaves]
            if unknown:
                raise BadRequest(f"backward wrt unknown leaves {unknown}")
            try:
                out = pick_output(value, backward.get("output"))
                out.backward()
            except BaseException as exc:
                return error_reply(exc, "backward")
            grads = {w: tensor_grad(leaves[w]) for w in wrt}
            reply["grads"] = {w: None if g is None else encode_value(g) for w, g in grads.items()}
        return reply

    def names_of(self, fn, n: int) -> list[str]:
        """``positional_names``, remembered per function object (``inspect.signature`` costs
        more than a training step's whole call)."""
        cache = self.__dict__.setdefault("_names", {})
        try:
            key = (id(fn), n)
            hit = cache.get(key)
            if hit is not None and hit[0] is fn:
                return hit[1]
        except BaseException:
            return positional_names(fn, n)
        names = positional_names(fn, n)
        cache[key] = (fn, names)
        return names

    def op_map(self, msg: dict) -> dict:
        """Call ``fn`` once per row of ``columns`` (arrays with one row per call; call i gets
        ``[col[i].tolist() for col in columns]`` as its positional arguments, plain lists as a
        notebook loop builds them) and the shared ``kwargs``; seeded once, no gradients, no
        mutation report (each call's lists are fresh and used once). Reply ``values``: one
        float64 array with a row per call when every result is a tensor, number or list of
        numbers of one length, else one encoded value per call; or the first failing call's
        error with its ``index``."""
        name, fn, missing = self.function_of(msg)
        if missing:
            return missing
        builder = Builder(self.device, {})
        columns = [builder.value(c) for c in (msg.get("columns") or [])]
        if not columns or not all(type(c) is T.ndarray and c.ndim >= 1 and
                                  c.shape[0] == columns[0].shape[0] for c in columns):
            raise BadRequest("map needs columns: arrays with one row per call")
        rows = [c.tolist() for c in columns]
        kwargs = {k: builder.value(v) for k, v in (msg.get("kwargs") or {}).items()}
        self.reset_state(msg.get("seed"))
        values, started = [], time.perf_counter()
        for i in range(columns[0].shape[0]):
            try:
                values.append(fn(*[r[i] for r in rows], **dict(kwargs)))
            except BaseException as exc:
                reply = error_reply(exc, "call")
                reply["index"] = i
                return reply
        sys.setrecursionlimit(RECURSION_LIMIT)
        return {"ok": True, "values": encode_rows(values),
                "seconds": time.perf_counter() - started}

    def op_train(self, msg: dict) -> dict:
        """Trusted workers only: start a trainer (its ``train``) in a thread. ``trainer`` names
        the assignment, its folder and the trainer's file in it (``trainers/<name>.py``),
        imported through ``autograder.plugins`` (which a student's worker does not have). The
        reply is the trainer's first student call (``need``) or its result (``value``);
        ``train_reply`` hands it each student reply in turn.

        With ``direct`` (``direct.DirectLine``'s spec) and the student worker's two pipe ends
        sent with the request, the trainer calls the student's worker itself and only what is
        not an ordinary reply comes up as a ``need``; the final reply then carries ``junk``."""
        from autograder.harness import relay
        from autograder.sandbox.channel import close_fds
        from autograder.sandbox.direct import DirectLine

        reader = getattr(self, "reader", None)
        ends = reader.take_fds() if reader is not None else []
        spec = msg.get("direct")
        if type(spec) is not dict or len(ends) != 2:
            close_fds(*ends)
            ends, spec = [], None
        try:
            module = trainer_module(msg.get("trainer"))
            if getattr(self, "training", None) is not None:
                self.training.abort()
            params = {k: Builder(self.device, {}).value(v)
                      for k, v in (msg.get("params") or {}).items()}
            line = DirectLine((ends[0], ends[1]), spec, None) if spec is not None else None
        except BaseException:
            close_fds(*ends)
            raise
        check = params.pop("check", {}) or {}
        ns = self.ns
        self.direct = line

        def target(ask):
            if line is not None:
                line.relayed = ask
            student = relay.Student(line.ask if line is not None else ask, ns,
                                    seed=int(check.get("seed", 0)), mutants=check.get("mutants"),
                                    calls_expected=check.get("calls"))
            try:
                return module.train(student, **params)
            finally:
                if line is not None:
                    line.close()

        self.training = relay.Relay(target)
        return self.train_event(self.training.start())

    def op_train_reply(self, msg: dict) -> dict:
        training = getattr(self, "training", None)
        if training is None or training.finished:
            raise BadRequest("no training run is waiting for a reply")
        reply = msg.get("reply")
        if msg.get("abort") or type(reply) is not dict:
            training.abort()
            self.training = self.direct = None
            return {"ok": True, "value": None}
        return self.train_event(training.resume(reply))

    def train_event(self, event) -> dict:
        kind, body = event
        if kind == "need":
            return {"ok": True, "need": body}
        self.training = None
        line, self.direct = getattr(self, "direct", None), None
        reply = kit_error(body) if kind == "failed" else {"ok": True, "value": encode_value(body)}
        if line is not None:        # closed by the trainer's thread as it ended
            reply["junk"] = line.new_junk()
        return reply

    def op_harness(self, msg: dict) -> dict:
        name = msg.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise BadRequest(f"bad harness name {name!r}")
        module = fresh_harness(name)
        params = {k: Builder(self.device, {}).value(v)
                  for k, v in (msg.get("params") or {}).items()}
        namespace = self.ns
        unavailable = msg.get("unavailable") or {}
        if unavailable:  # functions that hung or ended the process in an earlier call
            namespace = dict(self.ns)
            for fn_name, why in unavailable.items():
                namespace[str(fn_name)] = not_run_again(str(fn_name), str(why))
        self.reset_state(msg.get("seed"))
        started = time.perf_counter()
        try:
            value = module.run(namespace, **params)
        except BaseException as exc:
            return error_reply(exc, "harness")
        sys.setrecursionlimit(RECURSION_LIMIT)
        return {"ok": True, "value": encode_value(value), "seconds": time.perf_counter() - started}


TRAINER_FILE = re.compile(r"trainers/[a-z_][a-z0-9_]*\.py")


def trainer_module(trainer):
    """The trainer module a ``train`` request names (trusted worker only)."""
    if type(trainer) is not dict or not all(type(trainer.get(k)) is str
                                            for k in ("assignment", "folder", "file")):
        raise BadRequest(f"bad trainer {trainer!r}")
    if not TRAINER_FILE.fullmatch(trainer["file"]):
        raise BadRequest(f"bad trainer file {trainer['file']!r}")
    from autograder.plugins import load_module   # not in a student's worker: it refuses here

    return load_module(trainer["assignment"], trainer["folder"],
                       trainer["file"][:-len(".py")].replace("/", "."))


HARNESS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness")


def fresh_harness(name: str):
    """The kit's harness ``autograder/harness/<name>.py`` executed afresh from its file, with a
    fresh ``autograder.harness`` package for its imports, so that what a submission did to the
    imported modules (``autograder.harness.isolated.run = ...``) does not run. (Training runs
    in the trusted worker; in a student's worker only per-call helpers such as ``isolated`` run
    this way.)"""
    import types

    path = os.path.join(HARNESS_DIR, f"{name}.py")
    if not os.path.isfile(path):
        raise ModuleNotFoundError(f"No module named 'autograder.harness.{name}'")
    package_name, module_name = "autograder.harness", f"autograder.harness.{name}"
    package = types.ModuleType(package_name)
    package.__path__, package.__file__ = [HARNESS_DIR], os.path.join(HARNESS_DIR, "__init__.py")
    module = types.ModuleType(module_name)
    module.__file__ = path
    saved = {k: sys.modules.get(k) for k in (package_name, module_name)}
    try:
        sys.modules[package_name] = package
        with open(package.__file__, encoding="utf-8") as f:
            exec(compile(f.read(), package.__file__, "exec"), package.__dict__)
        with open(path, encoding="utf-8") as f:
            exec(compile(f.read(), path, "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


class EarlierCallFailed(Exception):
    """Raised in a harness instead of calling a function that hung or ended the process."""


def not_run_again(name: str, why: str):
    def stand_in(*args, **kwargs):
        raise EarlierCallFailed(f"an earlier call of {name} {why}, so it was not run again")
    stand_in.__name__ = name
    return stand_in


def pick_output(value, index):
    out = value
    if index is not None:
        if not isinstance(value, (tuple, list)):   # tuple subclasses (NamedTuple) included
            raise TypeError(f"expected a tuple of outputs, got a {type(value).__name__}")
        items = list(tuple.__iter__(value) if isinstance(value, tuple) else value)
        if not -len(items) <= int(index) < len(items):
            raise IndexError(f"expected at least {int(index) + 1} outputs, got {len(items)}")
        out = items[int(index)]
    if not T.isinstance(out, T.Tensor):
        which = "the output" if index is None else f"output {index}"
        raise TypeError(f"{which} is a {type(out).__name__}, not a tensor, so no gradient can "
                        "flow through it")
    return out


def positional_names(fn, n: int) -> list[str]:
    """Names for the first ``n`` positional arguments: parameter names where known."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except BaseException:
        params = []
    return [params[i] if i < len(params) else f"args[{i}]" for i in range(n)]


GPU_FRACTION_ENV = "AG_GPU_MEMORY_FRACTION"   # set by the launcher (backends.py) for CUDA


def bound_gpu_memory(cuda) -> float | None:
    """Cap this process's share of every visible GPU's memory at the fraction the grader set
    (``Limits.gpu_memory_fraction``, in ``GPU_FRACTION_ENV``): torch's caching allocator then
    raises OutOfMemoryError past it. Called before any student code uses CUDA. None: no cap."""
    raw = os.environ.get(GPU_FRACTION_ENV)
    if not raw:
        return None
    fraction = float(raw)
    if not 0 < fraction <= 1:
        raise BadRequest(f"GPU memory fraction {raw!r} is not in (0, 1]")
    for index in range(cuda.device_count()):
        cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def resolve_device(requested: str) -> tuple[str, str]:
    """(device, note). CUDA falls back to the CPU (with a note) when torch cannot use it; on
    CUDA the worker's share of GPU memory is bounded first (``bound_gpu_memory``)."""
    if requested in ("cuda", "auto"):
        if torch.cuda.is_available():
            bound_gpu_memory(torch.cuda)
            return "cuda", ""
        return "cpu", "" if requested == "auto" else "CUDA is not available in the worker"
    return "cpu", ""


class alarm:
    """Raise CellTimeout in the main thread after ``seconds`` (wall clock)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        def fire(signum, frame):
            raise CellTimeout(f"the cell did not finish within {self.seconds:g} s")
        self.old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass


# --- the zygote ------------------------------------------------------------------------------

_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')


def request_id(data) -> str | None:
    """The id of a request that could not be parsed, looked for in its first and last 4 KiB
    (``protocol.dumps`` writes ``id`` last), so that even that error reply carries it."""
    view = bytes(data[:4096]) + b" " + bytes(data[-4096:])
    found = _ID.findall(view)
    return found[-1].decode("ascii") if found else None


KEPT_SIGNALS = ("SIGCHLD", "SIGCONT", "SIGKILL", "SIGSTOP", "SIGWINCH", "SIGURG")


class Zygote:
    """Forks one child per ``fork`` request; never runs student code or torch computation.

    What a child can do to it, and why it does not matter (README "Security model"):

    - Signals: when the zygote holds CAP_SETUID (bubblewrap with a root grader: the stub keeps
      ``backends.ZYGOTE_CAPS`` for it), each child runs as ``child_uid`` (our uid +
      ``CHILD_UID_OFFSET``) with no capability at all, so it cannot signal us (EPERM). Otherwise
      it ignores every signal that can be ignored; SIGKILL and SIGSTOP cannot be, and the
      parent's handle (``client.ZygoteHandle``) detects both, restarts the zygote and charges the
      submission whose child was live. It is non-dumpable (no ptrace, no /proc/PID/mem) and the
      children's seccomp filter refuses ptrace.
    - Scratch: each child gets a fresh directory ``child-<n>``. The zygote never reads a file in
      its scratch: it only removes entries (on the scratch's own device, links not followed)
      after a child ends (op ``kill``) and before the next fork, so nothing a child leaves there
      reaches the next child or the zygote.
    - It is a child subreaper: orphans of a child come back to it and are killed with it.
    """

    def __init__(self, *, child_seccomp: bool, wipe_uid_files: bool):
        self.sock = socket.socket(fileno=REQ_FD)  # keeps fd 3 taken: received fds are >= 5
        self.scratch = os.getcwd()
        self.forks = 0
        self.child_dir = self.scratch
        self.child_pid = 0
        self.statuses: dict[int, int] = {}
        self.cpu: dict[int, float] = {}      # CPU seconds each reaped child used
        self.wipe_uid_files = wipe_uid_files and os.getuid() >= SANDBOX_UID_MIN
        self.handlers: dict[int, object] = {}  # signal dispositions to give back to children
        self.seccomp = None
        if child_seccomp:  # the filter the launcher would have installed (no new processes)
            from autograder.sandbox import backends
            self.seccomp = (backends.install_seccomp, backends.seccomp_program())
        if self.wipe_uid_files:   # found now, as this uid: the places it could write to
            from autograder.sandbox import cleanup
            cleanup.writable_places()
        self.child_uid = None
        if capabilities("CapEff") >> 7 & 1 and os.getuid() >= SANDBOX_UID_MIN:   # CAP_SETUID
            from autograder.sandbox import backends
            self.child_uid = os.getuid() + backends.CHILD_UID_OFFSET
            self.set_capabilities = backends.set_capabilities
            _libc().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
            backends.set_capabilities(backends.ZYGOTE_CAPS, backends.ZYGOTE_CAPS, 0)

    def as_children(self):
        """A context in which files are made and removed as the children's uid (effective uid
        only: a child still cannot signal us, that needs our real or saved uid)."""
        import contextlib

        @contextlib.contextmanager
        def switched():
            if self.child_uid is None:
                yield
                return
            os.setresuid(-1, self.child_uid, -1)
            try:
                yield
            finally:
                os.setresuid(-1, os.getuid(), -1)
        return switched()

    def become_child_uid(self) -> None:
        """In a child: the children's uid and no capability left, or exit."""
        u = self.child_uid
        os.setgroups([])
        os.setresgid(u, u, u)
        os.setresuid(u, u, u)
        _libc().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        self.set_capabilities(0, 0, 0)
        if os.getresuid() != (u,) * 3 or any(capabilities(k) for k in
                                              ("CapEff", "CapPrm", "CapInh", "CapAmb")):
            os._exit(1)

    def ignore_signals(self) -> None:
        """Ignore every signal that can be ignored (but those in ``KEPT_SIGNALS``)."""
        kept = {getattr(signal, n) for n in KEPT_SIGNALS if hasattr(signal, n)}
        for sig in signal.valid_signals():
            if sig in kept:
                continue
            try:
                self.handlers[sig] = signal.signal(sig, signal.SIG_IGN)
            except (OSError, ValueError, RuntimeError):
                continue

    def serve(self) -> None:
        prctl(PR_SET_DUMPABLE, 0)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.ignore_signals()
        while True:
            fds = []
            try:
                data, fds = recv_fds(self.sock)
            except OSError:
                return
            if not data:
                return
            rid = request_id(data)
            try:
                msg = protocol.loads(data)
                if type(msg) is not dict:
                    raise BadRequest("a request is a JSON object")
                rid = msg.get("id", rid)
                reply = self.handle(msg, fds)
            except BaseException as exc:
                reply = kit_error(exc)
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            write_all(REP_FD, protocol.dumps({"id": rid, **reply}))

    def handle(self, msg: dict, fds: list[int]) -> dict:
        op = msg.get("op")
        self.reap()
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "dumpable": prctl(PR_GET_DUMPABLE),
                    "threads": thread_count(), "child_uid": self.child_uid}
        if op == "kill":
            self.kill_children()
            self.wipe()
            return {"ok": True}
        if op == "status":
            pid = int(msg.get("pid", 0))
            deadline = time.monotonic() + float(msg.get("wait", 0))
            while pid not in self.statuses and time.monotonic() < deadline:
                time.sleep(0.01)
                self.reap()
            if pid not in self.statuses:
                return {"ok": True, "running": True}
            return {"ok": True, "running": False, **describe_status(self.statuses[pid]),
                    "cpu_seconds": self.cpu.get(pid)}
        if op == "fork":
            if len(fds) != 3:
                raise BadRequest("fork needs three descriptors: request, reply, output")
            self.kill_children()
            self.wipe()
            self.forks += 1
            self.child_dir = os.path.join(self.scratch, f"child-{self.forks}")
            with self.as_children():
                os.mkdir(self.child_dir, 0o700)
            zygote_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                try:
                    self.child(fds, zygote_pid)
                finally:
                    os._exit(0)
            self.child_pid = pid
            return {"ok": True, "pid": pid}
        raise BadRequest(f"unknown op {op!r}")

    def child(self, fds: list[int], zygote_pid: int) -> None:
        """In the forked child: become a fresh plain worker on the given descriptors."""
        os.setsid()
        if self.child_uid is not None:
            self.become_child_uid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)    # after the uid change, which clears it
        if os.getppid() != zygote_pid:  # the zygote died before the death signal was set
            os._exit(1)
        prctl(PR_SET_CHILD_SUBREAPER, 0)
        for sig, handler in self.handlers.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, TypeError, RuntimeError):
                pass
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        self.sock.close()
        setup_fds(*fds)
        os.chdir(self.child_dir)
        os.environ.update(HOME=self.child_dir, TMPDIR=self.child_dir)
        if self.seccomp is not None:
            install, program = self.seccomp
            install(program)
        start_plain_worker()

    def wipe(self) -> None:
        """Remove every entry of the scratch directory a child could have made (ours, on the
        scratch's own device: a bind-mounted kit or venv is left alone) and, under
        ``--wipe-uid-files`` (fallback), our uid's files in every writable place of the host.
        Reads no file; follows no link; never raises."""
        import shutil

        owner = os.getuid() if self.child_uid is None else self.child_uid
        try:
            dev = os.lstat(self.scratch).st_dev
            entries = list(os.scandir(self.scratch))
        except OSError:
            entries = []
        with self.as_children():
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                    if st.st_dev != dev or st.st_uid != owner:
                        continue       # a mount point, or what bubblewrap made (not a child's)
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        os.unlink(e.path)
                except OSError:
                    continue
        if self.wipe_uid_files:
            from autograder.sandbox import cleanup
            with self.as_children():
                cleanup.remove_uid_files(owner, keep=(self.scratch,))

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.statuses[pid] = status
            self.cpu[pid] = usage.ru_utime + usage.ru_stime

    def kill_children(self) -> None:
        """SIGKILL every descendant (children and the orphans handed back to us), reap them."""
        me = os.getpid()
        for _ in range(20):
            victims = descendants(me)
            if self.child_pid and self.child_pid not in self.statuses:
                victims.add(self.child_pid)
            if not victims:
                break
            for pid in victims:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                self.reap()
                if not (descendants(me) & victims) and (
                        not self.child_pid or self.child_pid in self.statuses):
                    break
                time.sleep(0.005)
        self.reap()


PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def capabilities(kind: str) -> int:
    """This process's capability set ``kind`` (CapEff, CapPrm, CapInh, CapAmb) as a mask."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(kind + ":"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def describe_status(status: int) -> dict:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status), "code": None}
    return {"signal": None, "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}


def recv_fds(sock: socket.socket, maxfds: int = 3,
             bufsize: int = 1 << 16) -> tuple[bytes, list[int]]:
    """Up to ``bufsize`` bytes from ``sock`` and the descriptors (at most ``maxfds``) sent with
    them."""
    import array

    fds = array.array("i")
    data, ancdata, flags, _ = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


# --- entry point -----------------------------------------------------------------------------

def hello(role: str) -> None:
    write_all(REP_FD, protocol.dumps({"id": "hello", "ok": True, "role": role, "pid": os.getpid(),
                                      "torch": torch.__version__,
                                      "python": sys.version.split()[0]}))


def start_plain_worker() -> None:
    """Serve one submission on fds 3/4 (torch already imported); returns at EOF."""
    sys.setrecursionlimit(RECURSION_LIMIT)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True, errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    torch.set_num_threads(1)
    hello("worker")
    Server().serve()


PRELOAD = ("matplotlib.pyplot",)   # what nearly every notebook imports: ~2.5 s, more when busy


def preload() -> None:
    """Import ``PRELOAD`` before the hello (kit code only, no student code): a zygote's children
    start with it, and a notebook's import of it is not counted against its cell's time limit.
    A module that cannot be imported is left to the notebook."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            pass


def main(argv: list[str]) -> None:
    """``--fds R,W`` (required); ``--zygote`` with ``--child-seccomp``, ``--wipe-uid-files``."""
    global torch, np, T
    zygote = "--zygote" in argv
    rfd, wfd = (int(x) for x in argv[argv.index("--fds") + 1].split(","))
    setup_fds(rfd, wfd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for name in THREAD_ENV:
        os.environ[name] = "1"
    import numpy
    import torch as _torch
    np, torch = numpy, _torch
    T = Pristine(torch, np)
    preload()
    if zygote:
        zygote = Zygote(child_seccomp="--child-seccomp" in argv,
                        wipe_uid_files="--wipe-uid-files" in argv)
        hello("zygote")
        zygote.serve()
    else:
        start_plain_worker()


if __name__ == "__main__":
    main(sys.argv[1:])
    flush_std()
    os._exit(0)
