"""Nothing the student's worker sees during trusted training reveals the trainer's secrets.

Each relayed call carries a seed (the worker seeds torch with it, so student code can read it
back with ``torch.initial_seed()``). The rule: every such number is a one-way hash of the
run's secret seed, so neither the secret nor the sample of calls that will be checked can be
computed from it.
"""
from __future__ import annotations

import random

from autograder.harness.relay import Student, derive

SECRET = 987_654_321_123


def seeds_seen(secret: int, fn: str = "reinforce_loss", n: int = 50) -> list[int]:
    """The call seeds a student's worker is sent over ``n`` calls of ``fn``."""
    s = Student(ask=None, ns=None, seed=secret)
    out = []
    for i in range(n):
        s.counts[fn] = i
        out.append(s._next_seed(fn))
    return out


def test_the_affine_inversion_that_once_worked_finds_nothing():
    """The old call seed was (S * 1000003 + count * 7919 + len(fn)) mod 2^62: one call's seed
    gave S back. With a hash the same inversion gives a number that is not S."""
    first = seeds_seen(SECRET)[0]
    inverse = pow(1_000_003, -1, 1 << 62)
    assert (first - len("reinforce_loss")) * inverse % (1 << 62) != SECRET
    assert first == derive(SECRET, "call seed", "reinforce_loss", 0)


def test_which_calls_are_checked_does_not_follow_from_the_seeds_sent():
    """The sample generator is keyed with another label: guessing it from the seeds sent (as
    the old ``seed ^ 0xC4EC`` could be) predicts the checked calls no better than chance."""
    s = Student(ask=None, ns=None, seed=SECRET)
    truth = [s.rng.random() < 0.1 for _ in range(400)]
    for guess in (SECRET ^ 0xC4EC, SECRET, seeds_seen(SECRET)[0]):
        g = random.Random(guess)
        predicted = [g.random() < 0.1 for _ in range(400)]
        assert predicted != truth


def test_seeds_are_spread_and_distinct():
    seen = seeds_seen(SECRET, n=200) + seeds_seen(SECRET + 1, n=200)
    assert len(set(seen)) == len(seen)
    assert all(0 <= x < (1 << 62) for x in seen)
