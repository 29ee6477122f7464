#!/usr/bin/env python3
"""Reference values for the judges, computed with SciPy and seqabpy.

Writes JSON fixtures that crates/canary-stats/tests/references.rs reads, so CI
runs Rust only. Regenerating must reproduce the committed files byte for
byte (sorted keys, floats written with repr, fixed seeds):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install scipy seqabpy
    /tmp/venv/bin/python tools/judge_refs.py            # writes the fixtures
    /tmp/venv/bin/python tools/judge_refs.py --check    # exits 1 if they differ

Cross-checks made here, before anything is written:
- count test, two-sided: the closed form with scipy.special.betaln against
  seqabpy.gavi.sequential_p_value (Lindon & Malek's Dirichlet-multinomial
  e-value), and both against the table in STATISTICS.md;
- count test, one-sided: the truncated closed form against numerical
  integration (scipy.integrate.quad) of the truncated Beta mixture;
- mSPRT, one-sided: the closed form Λ·2Φ(·) against quad of the half-normal
  mixture;
- Mann-Whitney: U and p from scipy.stats.mannwhitneyu(method="asymptotic",
  use_continuity=True); the Hodges-Lehmann estimate as numpy's median of the
  pairwise differences; the interval with R's algorithm (wilcox.test,
  exact=FALSE, correct=TRUE) re-implemented on scipy.optimize.brentq.
(savvi 0.3.1 also implements the count test but imports matplotlib at import
time; seqabpy is used instead.)
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import integrate, optimize, special, stats
from seqabpy import gavi

OUT = Path(__file__).resolve().parent.parent / "crates/canary-stats/tests/fixtures"


def count_log_e(nb, nc, rc, k=100.0, one_sided=False):
    rb = 1.0 - rc
    v = (special.betaln(k * rb + nb, k * rc + nc) - special.betaln(k * rb, k * rc)
         - special.xlogy(nb, rb) - special.xlogy(nc, rc))
    if one_sided:
        v += (math.log(special.betaincc(k * rc + nc, k * rb + nb, rc))
              - math.log(special.betaincc(k * rc, k * rb, rc)))
    return float(v)


def count_log_e_quad(nb, nc, rc, k=100.0):
    """One-sided e-value by integrating the truncated mixture."""
    rb = 1.0 - rc
    a, b = k * rc, k * rb
    # Likelihood ratio theta^nc (1-theta)^nb / (rc^nc rb^nb), in logs.
    def lr(t):
        return math.exp(nc * math.log(t / rc) + nb * math.log((1 - t) / rb)
                        + (a - 1) * math.log(t) + (b - 1) * math.log(1 - t) - special.betaln(a, b))
    num, _ = integrate.quad(lr, rc, 1.0, epsabs=0, epsrel=1e-12, limit=500,
                            points=[min(0.999, (nc + a) / (nb + nc + a + b))])
    den = special.betaincc(a, b, rc)
    return math.log(num / den)


def special_refs():
    pts = [0.1, 0.5, 1.0, 2.5, 10.0, 123.456, 1e4, 1e6]
    beta_args = [(0.5, 0.5, 0.3), (2.0, 3.0, 0.4), (5.0, 95.0, 0.05), (95.0, 5.0, 0.95),
                 (100.0, 1000.0, 0.09), (1050.0, 85.0, 0.95), (80.5, 955.0, 0.05),
                 (1e4, 2e4, 0.34), (3.0, 7.0, 0.999)]
    probs = [1e-12, 1e-6, 0.001, 0.01, 0.02425, 0.05, 0.3, 0.5, 0.7, 0.975, 0.99, 0.999999]
    zs = [-30.0, -8.0, -3.0, -1.0, 0.0, 0.5, 1.959963984540054, 4.0, 9.0]
    return {
        "ln_gamma": [[x, float(special.gammaln(x))] for x in pts],
        "ln_beta": [[a, b, float(special.betaln(a, b))] for a, b in [(0.5, 0.5), (2.0, 3.0), (100.0, 5.0), (1e5, 3e5)]],
        "beta_inc": [[a, b, x, float(special.betainc(a, b, x)), float(special.betaincc(a, b, x))]
                     for a, b, x in beta_args],
        "norm_ppf": [[p, float(stats.norm.ppf(p))] for p in probs],
        "norm_cdf": [[z, float(stats.norm.cdf(z)), float(stats.norm.sf(z))] for z in zs],
    }


def count_refs():
    table = [(0.50, 100, 150), (0.50, 1000, 1200), (0.05, 950, 80), (0.05, 950, 50)]
    extra = [(0.01, 990, 25), (0.25, 300, 130), (0.9, 10, 120), (0.05, 0, 7), (0.3, 12, 0), (0.5, 0, 0)]
    rows = []
    for rc, nb, nc in table + extra:
        two = count_log_e(nb, nc, rc)
        p_seq = float(gavi.sequential_p_value([nb, nc], [1 - rc, rc]))
        p_closed = min(1.0, math.exp(-two))
        assert abs(p_seq - p_closed) <= 1e-9 * max(p_closed, 1e-300), (rc, nb, nc, p_seq, p_closed)
        one = count_log_e(nb, nc, rc, one_sided=True)
        if nb + nc > 0:
            q = count_log_e_quad(nb, nc, rc)
            assert abs(q - one) <= 1e-7 * max(1.0, abs(one)), (rc, nb, nc, q, one)
        rows.append({"rho_canary": rc, "n_base": nb, "n_canary": nc, "k": 100.0,
                     "log_e": two, "p": p_seq, "log_e_one_sided": one})
    return rows


def msprt_refs():
    alpha = 0.05
    kappa = 2 * math.log(1 / alpha) + math.log(1 + 2 * math.log(1 / alpha))
    rows = []
    for s2, tau2, d in [(0.02, 0.0158723092, 0.3), (0.002, 0.0158723092, 0.1),
                        (0.01, 0.05, -0.2), (0.5, 0.1, 1.5), (1e-4, 1e-3, 0.02)]:
        two = 0.5 * math.log(s2 / (s2 + tau2)) + tau2 * d * d / (2 * s2 * (s2 + tau2))
        # Half-normal mixture over delta > 0 of exp(delta*d/s2 - delta^2/(2 s2)).
        f = lambda x: (math.exp(x * d / s2 - x * x / (2 * s2) - x * x / (2 * tau2))
                       * 2 / math.sqrt(2 * math.pi * tau2))
        scale = math.sqrt(1 / (1 / s2 + 1 / tau2))
        peak = max(0.0, d / s2 * scale * scale)
        val, _ = integrate.quad(f, 0, np.inf, epsabs=0, epsrel=1e-12, limit=500, points=None) \
            if peak == 0 else integrate.quad(f, 0, peak + 40 * scale, epsabs=0, epsrel=1e-12, limit=500, points=[peak])
        one = math.log(val)
        closed = two + math.log(2 * stats.norm.cdf(d * math.sqrt(tau2) / (math.sqrt(s2) * math.sqrt(s2 + tau2))))
        assert abs(one - closed) <= 1e-8 * max(1, abs(one)), (s2, tau2, d, one, closed)
        hw = math.sqrt(s2 * (s2 + tau2) / tau2 * math.log((s2 + tau2) / (s2 * alpha * alpha)))
        rows.append({"s2": s2, "tau2": tau2, "d": d, "alpha": alpha, "log_lambda": two,
                     "log_lambda_one_sided": one, "half_width": hw})
    return {"kappa_0.05": kappa, "rows": rows}


def band_refs():
    eps = lambda t, a: 0.85 * math.sqrt((math.log(math.log(math.e * t)) + 0.8 * math.log(1612 / a)) / t)
    return [{"t": t, "alpha": a, "epsilon": eps(t, a)}
            for t in [1, 10, 100, 1000, 12345, 1e6] for a in [0.025, 0.05 / 3]]


def r_wilcox_interval(x, y, conf):
    """R's wilcox.test(conf.int=TRUE, exact=FALSE, correct=TRUE) interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    m, n = len(x), len(y)
    alpha = 1 - conf
    mumin, mumax = x.min() - y.max(), x.max() - y.min()

    def w(d):
        dr = stats.rankdata(np.concatenate([x - d, y]))
        _, t = np.unique(dr, return_counts=True)
        dz = dr[:m].sum() - m * (m + 1) / 2 - m * n / 2
        corr = np.sign(dz) * 0.5
        sigma = math.sqrt(m * n / 12 * ((m + n + 1) - (t ** 3 - t).sum() / ((m + n) * (m + n - 1))))
        return (dz - corr) / sigma

    def root(zq):
        fl, fu = w(mumin) - zq, w(mumax) - zq
        if fl <= 0:
            return float(mumin)
        if fu >= 0:
            return float(mumax)
        tol = 1e-12 * abs(mumax - mumin)
        return float(optimize.brentq(lambda d: w(d) - zq, mumin, mumax, xtol=tol, rtol=4 * np.finfo(float).eps, maxiter=1000))

    zq = stats.norm.ppf(1 - alpha / 2)
    return [root(zq), root(-zq)]


def mann_whitney_refs():
    rng = np.random.default_rng(20261121)
    cases = []
    specs = [("normal_shift", 40, 35, lambda r, k: np.round(r.normal(100 + 8 * k, 10, size=None), 3)),
             ("ties", 30, 25, lambda r, k: float(r.integers(0, 6) + k)),
             ("lognormal", 60, 80, lambda r, k: np.round(r.lognormal(4.6 + 0.1 * k, 0.4), 4)),
             ("equal_dist", 50, 50, lambda r, k: np.round(r.normal(5, 1), 2))]
    for name, m, n, draw in specs:
        x = [float(draw(rng, 1)) for _ in range(m)]
        y = [float(draw(rng, 0)) for _ in range(n)]
        res = stats.mannwhitneyu(x, y, use_continuity=True, alternative="two-sided", method="asymptotic")
        hl = float(np.median(np.subtract.outer(np.asarray(x), np.asarray(y))))
        ci = r_wilcox_interval(x, y, 0.98)
        cases.append({"name": name, "canary": x, "baseline": y, "u": float(res.statistic),
                      "p_value": float(res.pvalue), "hodges_lehmann": hl, "interval_98": ci})
    return cases


def render(obj):
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def main():
    files = {
        "special.json": special_refs(),
        "count.json": count_refs(),
        "msprt.json": msprt_refs(),
        "band.json": band_refs(),
        "mann_whitney.json": mann_whitney_refs(),
    }
    check = "--check" in sys.argv[1:]
    differ = []
    for name, obj in files.items():
        path, text = OUT / name, render(obj)
        if check:
            if not path.exists() or path.read_text() != text:
                differ.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if differ:
        print("fixtures differ:", ", ".join(differ))
        return 1
    print("fixtures up to date" if check else f"wrote {len(files)} fixtures to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
