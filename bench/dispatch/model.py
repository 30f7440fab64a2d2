"""The simple model the simulator is compared with: what N replicas and a quorum of K
buy against a share of lying nodes, in closed form (a small exact recursion).

Assumptions: each result comes from a node drawn independently of every other (10,000
nodes, a handful per job: drawing without replacement changes nothing measurable), the
node is a liar with probability ``p``, a liar lies on a given job with probability
``lie_rate``, and a lie is the colluders' common wrong output with probability
``collude`` (else a wrong output no other result shares). So each result is

    right      with probability  a = 1 - q,        q = p * lie_rate
    colluded   with probability  b = q * collude
    own wrong  with probability  d = q * (1 - collude)

and the order results arrive in does not depend on their values. The first output K
results agree on is accepted. For N <= 2K - 1 at most one output can reach K among N
results, so with only N results (``report``):

    P(wrong accepted) = sum_{i >= K} C(N, i) b^i (1 - b)^(N - i)
    (N = 1: q;  N = 3, K = 2: 3b^2 - 2b^3)

and a dispute is N results without K that agree. ``extend`` draws one more result at a
time after a dispute (up to ``cap`` results); ``reexec`` settles a dispute with the
right output. Churn: a node alive when an attempt starts dies during its d seconds with
probability 1 - exp(-d/S) for exponential sessions of mean S; each lost attempt is run
again elsewhere.
"""

from __future__ import annotations

import math
from functools import cache


def outcome(p: float, n: int, k: int, *, lie_rate: float = 1.0, collude: float = 0.0,
            dispute: str = "report", cap: int = 8) -> dict[str, float]:
    """P(wrong accepted), P(dispute) (N results, no K agree), P(no output accepted in the
    end), the expected runs per job when all N start at once (N, plus the draws an
    ``extend`` adds: ``results``) and when results are drawn one at a time until K agree
    (``draws``: the dispatcher starting K and adding only what a quorum still lacks)."""
    if not 1 <= k <= n:
        raise ValueError("need 1 <= quorum <= replicas")
    q = p * lie_rate
    a, b, d = 1 - q, q * collude, q * (1 - collude)
    stop = n if dispute != "extend" else max(n, cap)

    @cache
    def walk(r: int, c: int, o: int) -> tuple[float, float, float, float, float]:
        """From r right, c colluded, o own-wrong results: (P wrong, P dispute seen,
        P unresolved, E further results past N, E further results)."""
        total = r + c + o
        if total == stop:
            return 0.0, 1.0, 1.0, 0.0, 0.0  # every stop short of a quorum is a dispute
        disputed = float(total >= n)  # extension draws only happen after a dispute
        w = dp = un = ex = dr = 0.0
        for prob, nxt in ((a, (r + 1, c, o)), (b, (r, c + 1, o)), (d, (r, c, o + 1))):
            if prob == 0:
                continue
            r2, c2, o2 = nxt
            if r2 >= k:
                w_, dp_, un_, ex_, dr_ = 0.0, 0.0, 0.0, 0.0, 0.0
            elif c2 >= k or (k == 1 and o2 > o):
                w_, dp_, un_, ex_, dr_ = 1.0, 0.0, 0.0, 0.0, 0.0
            else:
                w_, dp_, un_, ex_, dr_ = walk(r2, c2, o2)
            w += prob * w_
            dp += prob * max(dp_, disputed)
            un += prob * un_
            ex += prob * ex_
            dr += prob * dr_
        return w, dp, un, ex + (1.0 if total >= n else 0.0), dr + 1.0

    wrong, disputed, unresolved, extra, draws = walk(0, 0, 0)
    if dispute == "reexec":
        unresolved = 0.0  # a dispute is settled with the right output
    return {"wrong": wrong, "disputed": disputed, "unresolved": unresolved,
            "results": n + extra, "draws": draws}


def lost_per_attempt(session_s: float, median_s: float, sigma: float) -> float:
    """P(an attempt's node dies while it runs): E[1 - exp(-D/S)] for D log-normal
    (median, sigma) and sessions exponential with mean S (0: no churn)."""
    if session_s <= 0:
        return 0.0
    steps, lo, hi = 4000, -8.0, 8.0
    h = (hi - lo) / steps
    acc = 0.0
    for i in range(steps + 1):
        z = lo + i * h
        wgt = 0.5 if i in (0, steps) else 1.0
        dur = median_s * math.exp(sigma * z)
        acc += wgt * math.exp(-z * z / 2) * (1 - math.exp(-dur / session_s))
    return acc * h / math.sqrt(2 * math.pi)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default)."""
    if n == 0:
        return 0.0, 1.0
    ph = hits / n
    den = 1 + z * z / n
    mid = (ph + z * z / (2 * n)) / den
    half = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def zscore(hits: int, n: int, p: float) -> float:
    """How many standard errors the observed share is from the model's ``p``."""
    if n == 0:
        return 0.0
    if p <= 0 or p >= 1:
        return 0.0 if hits == round(p * n) else math.inf
    return (hits / n - p) / math.sqrt(p * (1 - p) / n)
