"""The wire protocol on the parent's side: values round-trip exactly, malformed input is refused
with ProtocolError, nothing uses pickle, the parent never imports torch, and the reply reader
skips junk. No worker process here (see test_worker.py)."""
from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from autograder import REPO_ROOT, bounds
from autograder.sandbox import protocol
from autograder.sandbox.channel import Channel, ChannelClosed, ChannelExpired, OutputTail
from autograder.sandbox.protocol import Other, ProtocolError, TensorMeta, TooLarge
from timing import allowance

OWN_MODULES = ["autograder/sandbox/protocol.py", "autograder/sandbox/worker.py",
               "autograder/sandbox/client.py", "autograder/sandbox/channel.py",
               "autograder/sandbox/process_tree.py", "autograder/sandbox/failure_text.py",
               "autograder/sandbox/launch.py", "autograder/sandbox/devices.py",
               "autograder/proxy.py"]


def wire(value):
    """encode -> one JSON line -> parse -> the JSON the other side sees."""
    line = protocol.dumps({"id": "x", "v": protocol.encode(value)})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return protocol.loads(line)["v"]


def as_reply_tensor(arr: np.ndarray, **flags) -> dict:
    body = protocol.array_payload(arr)
    body.update(device="cpu", requires_grad=False, grad_fn=False, is_exact_tensor=True)
    body.update(flags)
    return {"$tensor": body}


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**62, 1.5, -0.0, 1e-300, "text \n with \"quotes\" and é",
    [], [1, [2, [3.5, None]]], (1, 2.0, "x"), (), {"a": 1, "b": (2, [3])},
    {"nested": {"deeper": [(), {}]}},
])
def test_plain_values_round_trip(value):
    got, meta = protocol.decode(wire(value))
    assert got == value and type(got) is type(value)
    assert meta is None or isinstance(meta, (list, tuple, dict))


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_travel_tagged(x):
    encoded = wire(x)
    assert encoded == {"$float": {math.inf: "inf", -math.inf: "-inf"}.get(x, "nan")}
    got, _ = protocol.decode(encoded)
    assert (math.isnan(got) and math.isnan(x)) or got == x


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool", "float16", "int32",
                                   "uint8", "complex64"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3)])
def test_arrays_round_trip_bit_exact(dtype, shape):
    rng = np.random.default_rng(0)
    arr = np.asarray(rng.normal(size=shape) * 10).astype(dtype)
    if dtype.startswith("float") and arr.size:
        arr.flat[0] = np.nan
        arr.flat[-1] = -np.inf
    got, meta = protocol.decode(wire(arr))
    assert meta is None and got.dtype == arr.dtype and got.shape == arr.shape
    assert got.tobytes() == arr.tobytes()
    assert got.flags.writeable


def test_reply_tensor_decodes_to_array_and_meta():
    arr = np.array([[1.0, np.nan], [np.inf, -2.5]], dtype=np.float32)
    reply = {"$tuple": [as_reply_tensor(arr, requires_grad=True, grad_fn=True),
                        as_reply_tensor(np.float64(3.0).reshape(())), 4.0]}
    (a, b, c), (ma, mb, mc) = protocol.decode(json.loads(json.dumps(reply)))
    assert a.tobytes() == arr.tobytes() and a.dtype == np.float32
    assert ma == TensorMeta("float32", (2, 2), "cpu", True, True, True)
    assert b.shape == () and float(b) == 3.0 and mb.shape == () and mb.grad_fn is False
    assert c == 4.0 and mc is None


def test_bfloat16_bits_widen_exactly_to_float32():
    values = np.array([1.0, -2.5, 3.140625, np.inf], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    body = protocol.array_payload(bits, dtype_name="bfloat16")
    body.update(device="cpu", requires_grad=False, grad_fn=False, is_exact_tensor=True)
    got, meta = protocol.decode({"$tensor": body})
    assert meta.dtype == "bfloat16" and got.dtype == np.float32
    assert got.tolist() == values.tolist()


def test_other_and_toolarge():
    assert protocol.decode({"$other": {"type": "generator", "repr": "<gen>"}}) == \
        (Other("generator", "<gen>"), None)
    assert protocol.decode({"$toolarge": {"type": "Tensor", "shape": [20_000_000]}}) == \
        (TooLarge("Tensor", (20_000_000,)), None)


def test_tensor_arg_request_payload():
    arg = protocol.tensor_arg(np.array([1, 2, 3], dtype=np.int64), requires_grad=False)
    body = arg["$tensor"]
    assert body["device"] == "worker" and body["requires_grad"] is False
    assert protocol.payload_array(body).tolist() == [1, 2, 3]


def good_payload():
    return protocol.array_payload(np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("bad", [
    {"$pickle": "gASV"},
    {"$tuple": [1], "$dict": {}},
    {"$float": "NaN!"},
    {"$tuple": "not a list"},
    {"$ndarray": {**good_payload(), "dtype": "object"}},
    {"$ndarray": {**good_payload(), "dtype": "O"}},
    {"$ndarray": {**good_payload(), "shape": [5]}},
    {"$ndarray": {**good_payload(), "shape": [-4]}},
    {"$ndarray": {**good_payload(), "shape": [2, 2.0]}},
    {"$ndarray": {**good_payload(), "shape": [protocol.MAX_ELEMENTS + 1]}},
    {"$ndarray": {**good_payload(), "data": "!!!!" + good_payload()["data"][4:]}},
    {"$ndarray": {**good_payload(), "data": 12}},
    {"$tensor": good_payload()},                                   # flags missing
    {"$tensor": {**good_payload(), "device": "cpu", "requires_grad": "yes", "grad_fn": False,
                 "is_exact_tensor": True}},
    {"$other": {"type": 3, "repr": "x"}},
    {"$toolarge": {"type": "Tensor", "shape": "big"}},
    {"plain": "dict"},
    3 + 4j,
])
def test_malformed_values_are_refused(bad):
    with pytest.raises(ProtocolError):
        protocol.decode(bad)


def test_deep_nesting_is_refused_not_a_crash():
    deep = 1
    for _ in range(protocol.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ProtocolError):
        protocol.decode(deep)
    with pytest.raises(ProtocolError):
        protocol.encode(deep)
    with pytest.raises(ProtocolError):   # json's own recursion guard becomes a ProtocolError
        protocol.loads(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("line", [b"", b"not json", b"[1, 2]", b"42", b'{"a": NaN}',
                                  b'{"a": Infinity}', b"\xff\xfe", b'{"id": 1',
                                  b'{"a": 1e999}', b'{"a": [-1e400]}'])
def test_malformed_lines_are_refused(line):
    with pytest.raises(ProtocolError):
        protocol.loads(line)


def test_what_loads_accepts_dumps_can_send_on():
    msg = protocol.loads(b'{"a": 1e308, "b": -2.5e-320, "c": [0.1, 3]}')
    assert protocol.loads(protocol.dumps(msg)) == msg


def test_encode_refuses_what_it_cannot_send():
    for bad in (object(), {1: "int key"}, np.array([object()]), {1, 2}, b"bytes"):
        with pytest.raises(ProtocolError):
            protocol.encode(bad)
    assert protocol.encode(np.float32(1.5)) == 1.5 and protocol.encode(np.int64(3)) == 3
    assert protocol.encode(np.bool_(True)) is True


def test_dumps_caps_line_size(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_LINE_BYTES", 1000)
    protocol.dumps({"id": 1, "v": "x" * 900})
    with pytest.raises(ProtocolError):
        protocol.dumps({"id": 1, "v": "x" * 1000})


def test_no_pickle_anywhere_in_the_engine():
    banned_modules = {"pickle", "cPickle", "_pickle", "marshal", "dill", "cloudpickle", "shelve",
                      "copyreg", "joblib"}
    for rel in OWN_MODULES:
        tree = ast.parse((REPO_ROOT / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]} | {a.name for a in node.names}
            elif isinstance(node, ast.Attribute):
                names = {node.attr} & {"load", "loads"} if isinstance(node.value, ast.Name) and \
                    node.value.id in ("torch", "pickle", "marshal") else set()
            elif isinstance(node, ast.keyword):
                names = {"allow_pickle"} if node.arg == "allow_pickle" else set()
            else:
                continue
            assert not names & (banned_modules | {"load", "loads", "allow_pickle"}), (rel, names)


def test_parent_side_never_imports_torch():
    code = ("import sys, autograder.proxy, autograder.sandbox.client, autograder.sandbox.protocol;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- the reply reader: junk tolerance and deadlines --------------------------------------------

def reader():
    rep_r, rep_w = os.pipe()
    out_r, out_w = os.pipe()
    req_r, req_w = os.pipe()
    chan = Channel(rep_r, out_r, OutputTail(1024), req_w=req_w)
    return chan, rep_w, out_w, req_r


def test_reader_skips_junk_and_replies_with_other_ids():
    chan, rep_w, out_w, req_r = reader()
    junk = (b"garbage\n" + b'{"id": "other", "ok": true}\n' + b"[1,2]\n" + b"\xff\xfe\n"
            + b'{"id": "r1", "ok": true, "value": 5}\n')
    os.write(rep_w, junk)
    os.write(out_w, b"student print\n")
    msg = chan.exchange(b'{"id":"r1","op":"ping"}\n', "r1", time.monotonic() + 5)
    assert msg == {"id": "r1", "ok": True, "value": 5}
    assert chan.junk == 4
    assert os.read(req_r, 100) == b'{"id":"r1","op":"ping"}\n'
    chan.drain()
    assert chan.tail.text() == "student print\n"
    for fd in (rep_w, out_w, req_r):
        os.close(fd)
    chan.close()


@pytest.mark.parametrize("line, n", [
    (b"\n", bounds.REPLY_MAX_JUNK_LINES),
    (b'{"id": "stale", "ok": true}\n', bounds.REPLY_MAX_JUNK_LINES),
    (b"x" * (1 << 20) + b"\n", bounds.REPLY_MAX_JUNK_BYTES >> 20)])
def test_skipped_lines_cost_a_bounded_amount_per_wait(line, n):
    """Many short lines, many stale replies, or a few long lines: past the bound the pending
    request fails (its own reply, written after them, is never waited for); below it, the
    reply is found."""
    for count, fails in ((n - 1, False), (n, True)):
        chan, rep_w, out_w, req_r = reader()
        writer = threading.Thread(target=lambda: os.write(
            rep_w, line * count + b'{"id": "r1", "ok": true, "value": 1}\n'))
        writer.start()
        msg = chan.exchange(None, "r1", time.monotonic() + 30)
        writer.join()
        if fails:
            assert msg["ok"] is False and msg["error"]["type"] == "ProtocolJunk"
            assert chan.junk == n
        else:
            assert msg == {"id": "r1", "ok": True, "value": 1} and chan.junk == n - 1
        for fd in (rep_w, out_w, req_r):
            os.close(fd)
        chan.close()


def test_reader_deadline_and_eof():
    chan, rep_w, out_w, req_r = reader()
    os.write(rep_w, b'{"id": "late-partial"')
    started = time.monotonic()
    with pytest.raises(ChannelExpired):
        chan.exchange(None, "r2", time.monotonic() + 0.3)
    assert 0.25 < time.monotonic() - started < 0.3 + allowance(1)   # expires at its deadline
    os.close(rep_w)
    with pytest.raises(ChannelClosed):
        chan.exchange(None, "r2", time.monotonic() + 5)
    for fd in (out_w, req_r):
        os.close(fd)
    chan.close()


def test_output_tail_keeps_only_the_last_bytes():
    tail = OutputTail(10)
    for i in range(100):
        tail.feed(f"{i:03d}\n".encode())
    assert bytes(tail.buf) == b"7\n098\n099\n"
    assert tail.dropped == 400 - 10
    assert "390 earlier bytes" in tail.text()
