"""Odd return values for property tests: hypothesis strategies of *specs* (plain data) and
``build(spec, args, kwargs)``, which turns a spec into the Python/torch object a student's
function returns, given the arguments it was called with (so that a returned tensor can be
connected to an input that carries gradients, or be an unreduced per-sample loss).

What the specs cover: tensors of every shape class (0-dim, per-sample, (N, 1), matrices, empty,
3-D), every wire dtype (float16/32/64, bfloat16, ints, bool, complex), NaN, infinities, the
largest finite numbers, subnormals, with and without gradients (a leaf, connected to the
inputs, a Parameter, a Tensor subclass); Python floats (NaN, inf, 1e308), ints up to 2**2000,
bools, None, strings; numpy arrays; nested lists and tuples, NamedTuples and other tuple
subclasses, dicts; values the wire carries as ``$other`` (generators, lambdas, complex, sets,
object arrays) and as ``$toolarge``; exceptions; in-place changes of the inputs.
"""
from __future__ import annotations

import collections
import fractions

import numpy as np
from hypothesis import strategies as st

SHAPES = ["scalar", "one", "like", "like_col", "n3", "n5_1", "m2x2", "empty", "cube"]
DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool",
          "complex64"]
FILLS = ["normal", "nan", "inf", "-inf", "huge", "-huge", "zero", "subnormal", "mixed"]
GRADS = ["none", "leaf", "connected", "scaled", "param", "subclass"]
OTHERS = ["generator", "lambda", "object", "module", "set", "bytes", "complex", "object_array",
          "fraction", "range"]
TOO_LARGE = ["tensor", "ndarray", "str"]
RAISES = ["ValueError", "RuntimeError", "ZeroDivisionError", "KeyboardInterrupt", "SystemExit"]
# Ways to spoil one output of the correct answer (the answer key's, on the same inputs): the
# other outputs stay right, so the hidden test reaches its later checks with the odd one.
SPOILS = ["same", "per_sample", "unsqueeze", "item", "tolist", "detach", "float64", "float16",
          "bfloat16", "numpy", "nan", "huge", "int", "flip", "wrap", "negate", "none", "str",
          "extra"]


def answer_with(position, spoil) -> tuple:
    """The answer key's output with output ``position`` (None: the whole output) spoiled."""
    return ("answer_with", position, spoil)


def leaves() -> st.SearchStrategy:
    floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, 1e-30, 3.4e38]))
    return st.one_of(
        st.tuples(st.just("tensor"), st.sampled_from(SHAPES), st.sampled_from(DTYPES),
                  st.sampled_from(FILLS), st.sampled_from(GRADS)),
        st.tuples(st.just("input"), st.integers(0, 5),
                  st.sampled_from(["same", "neg", "sum_rows", "unsqueeze", "nan", "detached"])),
        st.tuples(st.just("float"), floats),
        st.tuples(st.just("int"), st.one_of(st.integers(-2**70, 2**70),
                                            st.sampled_from([1 << 999, 1 << 2000, -(1 << 1500)]))),
        st.tuples(st.just("bool"), st.booleans()),
        st.just(("none",)),
        st.tuples(st.just("str"), st.text(max_size=12)),
        st.tuples(st.just("ndarray"), st.sampled_from(SHAPES), st.sampled_from(
            ["float32", "float64", "int64", "bool", "complex128", "float16"]),
            st.sampled_from(FILLS)),
        st.tuples(st.just("other"), st.sampled_from(OTHERS)),
        st.tuples(st.just("toolarge"), st.sampled_from(TOO_LARGE)),
        st.tuples(st.just("raise"), st.sampled_from(RAISES)),
        st.tuples(st.just("mutate"), st.integers(0, 5)),
        st.tuples(st.just("answer_with"), st.sampled_from([None, 0, 1, 2]),
                  st.sampled_from(SPOILS)),
    )


def per_call(*call_specs) -> tuple:
    """A function whose n-th call returns ``call_specs[n % len]``: code that answers the first
    call of a test right and a later one oddly (or the other way round)."""
    return ("per_call", list(call_specs))


def specs() -> st.SearchStrategy:
    """One value spec for every call, or a different one per call."""
    one = value_specs()
    return st.one_of(one, st.lists(one, min_size=2, max_size=4).map(lambda x: per_call(*x)))


def value_specs() -> st.SearchStrategy:
    """Leaves and containers of them (lists, tuples, NamedTuples, tuple subclasses, dicts)."""
    def containers(children):
        items = st.lists(children, min_size=0, max_size=4)
        return st.one_of(
            st.tuples(st.just("list"), items),
            st.tuples(st.just("tuple"), items),
            st.tuples(st.just("namedtuple"), items),
            st.tuples(st.just("tuplesub"), items),
            st.tuples(st.just("dict"), items),
            st.tuples(st.just("tuple"), st.lists(children, min_size=3, max_size=3)),
        )
    return st.recursive(leaves(), containers, max_leaves=8)


# --- building the value, inside the (in-process) worker ------------------------------------

class _Sub:
    """Lazily made torch things (this module is imported by the parent-side test too)."""
    subclass = None


def _torch():
    import torch
    if _Sub.subclass is None:
        class OddTensor(torch.Tensor):
            pass
        _Sub.subclass = OddTensor
    return torch


def _tensors(args, kwargs):
    torch = _torch()
    found = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    return found


def _shape(name, args, kwargs):
    like = next((tuple(t.shape) for t in _tensors(args, kwargs)), (4,))
    return {"scalar": (), "one": (1,), "like": like, "like_col": like + (1,), "n3": (3,),
            "n5_1": (5, 1), "m2x2": (2, 2), "empty": (0,), "cube": (2, 3, 4)}[name]


def _numbers(shape, fill, rng):
    size = int(np.prod(shape, dtype=np.int64))
    base = rng.normal(0.0, 1.0, size=size)
    special = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 1e308, "-huge": -1e308,
               "zero": 0.0, "subnormal": 5e-324}
    if fill in special:
        base = np.full(size, special[fill])
    elif fill == "mixed" and size:
        base[::2] = np.nan
        base[1::3] = np.inf
    return base.reshape(shape)


def spoil(x, how: str, args, kwargs):
    """``x`` (one correct output) made odd in the way ``how`` names."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        return x if how == "same" else build(("str", "odd"), args, kwargs) if how == "str" else x
    if how == "same":
        return x
    if how == "per_sample":      # an unreduced loss: every sample's entry, the same mean
        like = next((tuple(t.shape) for t in _tensors(args, kwargs)), (4,))
        return x.expand(like) if x.dim() == 0 else torch.stack([x, x])
    if how == "unsqueeze":
        return x.unsqueeze(-1)
    if how == "item":
        return x.detach().reshape(-1)[0].item() if x.numel() else 0.0
    if how == "tolist":
        return x.tolist()
    if how == "detach":
        return x.detach()
    if how in ("float64", "float16", "bfloat16"):
        return x.to(getattr(torch, how))
    if how == "numpy":
        return x.detach().cpu().numpy()
    if how == "nan":
        return x * float("nan")
    if how == "huge":
        return x * 1e38 + 1e38
    if how == "int":
        return x.long()
    if how == "flip":
        return x.flip(-1) if x.dim() else x
    if how == "wrap":
        return (x,)
    if how == "negate":
        return -x
    if how == "none":
        return None
    if how == "str":
        return "0.5"
    if how == "extra":
        return torch.cat([x.reshape(-1), x.reshape(-1)[:1]])
    raise ValueError(how)


def build(spec, args, kwargs, rng=None, answer=None):
    """The object a student's function returns for ``spec`` on these arguments; ``answer()``
    is the correct output on them (the answer key's)."""
    torch = _torch()
    rng = rng or np.random.default_rng(0)
    kind = spec[0]
    if kind == "answer_with":
        _, position, how = spec
        value = answer() if answer is not None else torch.tensor(0.0)
        if isinstance(value, tuple) and position is not None and position < len(value):
            parts = list(value)
            parts[position] = spoil(parts[position], how, args, kwargs)
            return tuple(parts)
        return spoil(value, how, args, kwargs)
    if kind == "tensor":
        _, shape_name, dtype, fill, grad = spec
        shape = _shape(shape_name, args, kwargs)
        data = _numbers(shape, fill, rng)
        with np.errstate(all="ignore"):
            t = torch.tensor(data, dtype=torch.float64).to(getattr(torch, dtype))
        floating = t.is_floating_point() or t.is_complex()
        if grad == "leaf" and floating:
            t.requires_grad_(True)
        elif grad in ("connected", "scaled") and floating:
            source = next((a for a in _tensors(args, kwargs) if a.requires_grad), None)
            if source is not None:
                total = source.sum()
                link = total * 0 if grad == "connected" else total / max(1, source.numel())
                t = t + link.to(t.dtype) if not t.is_complex() else t
        elif grad == "param" and floating:
            t = torch.nn.Parameter(t)
        elif grad == "subclass":
            t = t.as_subclass(_Sub.subclass)
        return t
    if kind == "input":
        _, index, how = spec
        found = _tensors(args, kwargs)
        if not found:
            return None
        x = found[index % len(found)]
        if how == "neg":
            return -x
        if how == "sum_rows":
            return x.sum(-1) if x.dim() else x
        if how == "unsqueeze":
            return x.unsqueeze(-1)
        if how == "nan":
            return x * float("nan")
        if how == "detached":
            return x.detach()
        return x
    if kind == "float":
        return float(spec[1])
    if kind == "int":
        return int(spec[1])
    if kind == "bool":
        return bool(spec[1])
    if kind == "none":
        return None
    if kind == "str":
        return str(spec[1])
    if kind == "ndarray":
        _, shape_name, dtype, fill = spec
        with np.errstate(all="ignore"):
            return _numbers(_shape(shape_name, args, kwargs), fill, rng).astype(dtype)
    if kind == "other":
        return {"generator": lambda: (i for i in range(3)), "lambda": lambda: (lambda: 0),
                "object": object, "module": lambda: np, "set": lambda: {1.0, 2.0},
                "bytes": lambda: b"0.5", "complex": lambda: 1 + 2j,
                "object_array": lambda: np.array([object(), 1.0], dtype=object),
                "fraction": lambda: fractions.Fraction(1, 3),
                "range": lambda: range(3)}[spec[1]]()
    if kind == "toolarge":
        if spec[1] == "tensor":
            return torch.zeros(1).expand(10_000_001)
        if spec[1] == "ndarray":
            return np.broadcast_to(np.zeros(1, dtype=np.float32), (10_000_001,))
        return "x" * 1_000_001
    if kind == "raise":
        raise {"ValueError": ValueError, "RuntimeError": RuntimeError,
               "ZeroDivisionError": ZeroDivisionError, "KeyboardInterrupt": KeyboardInterrupt,
               "SystemExit": SystemExit}[spec[1]]("odd value")
    if kind == "mutate":
        found = _tensors(args, kwargs)
        if found:
            x = found[spec[1] % len(found)]
            with torch.no_grad():
                x.mul_(-2) if x.is_floating_point() else None
        return torch.tensor(0.0)
    items = [build(s, args, kwargs, rng, answer) for s in spec[1]]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    if kind == "namedtuple":
        cls = collections.namedtuple(f"Out{len(items)}", [f"f{i}" for i in range(len(items))])
        return cls(*items)
    if kind == "tuplesub":
        return _TupleSub(items)
    if kind == "dict":
        return {f"k{i}": v for i, v in enumerate(items)}
    raise ValueError(f"unknown spec {spec!r}")


class _TupleSub(tuple):
    pass
