//! Every reference value in STATISTICS.md, and the fixtures that
//! `tools/judge_refs.py` computes with SciPy and seqabpy, to 1e-6 relative
//! or better.

use canary_stats::kayenta::mann_whitney::{
    hodges_lehmann_sorted, mann_whitney_sorted, shift_interval_sorted, sorted,
};
use canary_stats::sequential::{band, count, msprt};
use canary_stats::special;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[track_caller]
fn close(got: f64, want: f64, rel: f64) {
    let ok = if want == 0.0 {
        got.abs() <= rel
    } else {
        ((got - want) / want).abs() <= rel
    };
    assert!(ok, "got {got:e}, want {want:e} (rel {rel:e})");
}

/// STATISTICS.md §5a table (k = 100): log E and the one-look p-value.
#[test]
fn statistics_md_count_table() {
    let table = [
        (0.50, 100.0, 150.0, 2.965838878, 0.0515172),
        (0.50, 1000.0, 1200.0, 7.140301876, 7.92513e-4),
        (0.05, 950.0, 80.0, 5.177759148, 5.64063e-3),
        (0.05, 950.0, 50.0, -1.214117065, 1.0),
    ];
    for (rho, nb, nc, log_e, p) in table {
        let got = count::log_e(nb, nc, rho, 100.0, false).unwrap();
        close(got, log_e, 1e-9);
        // The table prints p to 6 significant digits.
        close(count::p_value(got), p, 1e-6);
    }
}

#[test]
fn count_fixtures_two_and_one_sided() {
    for row in fixture("count.json").as_array().unwrap() {
        let (nb, nc, rho, k) = (
            f(&row["n_base"]),
            f(&row["n_canary"]),
            f(&row["rho_canary"]),
            f(&row["k"]),
        );
        let two = count::log_e(nb, nc, rho, k, false).unwrap();
        close(two, f(&row["log_e"]), 1e-9);
        close(count::p_value(two), f(&row["p"]), 1e-9);
        let one = count::log_e(nb, nc, rho, k, true).unwrap();
        close(one, f(&row["log_e_one_sided"]), 1e-9);
    }
}

/// STATISTICS.md §5b: κ and the two reference points (σ = 1).
#[test]
fn statistics_md_msprt() {
    close(msprt::kappa(0.05), 7.9361546017, 1e-9);
    let tau2 = 0.0158723092;
    close(2.0 * msprt::kappa(0.05) / 1000.0, tau2, 1e-8);
    for (n, d, log_l, hw) in [
        (100.0, 0.30, 0.7034338131, 0.5451870546),
        (1000.0, 0.10, 1.125184925, 0.1357386726),
    ] {
        close(
            msprt::paired_log_lambda(n, d, 1.0, tau2).unwrap(),
            log_l,
            1e-9,
        );
        close(msprt::paired_half_width(n, 1.0, tau2, 0.05), hw, 1e-9);
    }
}

#[test]
fn msprt_fixtures() {
    let v = fixture("msprt.json");
    close(msprt::kappa(0.05), f(&v["kappa_0.05"]), 1e-13);
    for row in v["rows"].as_array().unwrap() {
        let (s2, t2, d, a) = (
            f(&row["s2"]),
            f(&row["tau2"]),
            f(&row["d"]),
            f(&row["alpha"]),
        );
        close(
            msprt::log_lambda(d, s2, t2).unwrap(),
            f(&row["log_lambda"]),
            1e-12,
        );
        close(
            msprt::log_lambda_one_sided(d, s2, t2).unwrap(),
            f(&row["log_lambda_one_sided"]),
            1e-8,
        );
        close(msprt::half_width(s2, t2, a), f(&row["half_width"]), 1e-12);
    }
}

/// STATISTICS.md §5c: 2·ε_n(0.025).
#[test]
fn statistics_md_band() {
    close(2.0 * band::epsilon(100.0, 0.025), 0.5530353118, 1e-9);
    close(2.0 * band::epsilon(1000.0, 0.025), 0.1777059713, 1e-9);
    for row in fixture("band.json").as_array().unwrap() {
        close(
            band::epsilon(f(&row["t"]), f(&row["alpha"])),
            f(&row["epsilon"]),
            1e-13,
        );
    }
}

#[test]
fn special_function_fixtures() {
    let v = fixture("special.json");
    for r in v["ln_gamma"].as_array().unwrap() {
        close(special::ln_gamma(f(&r[0])), f(&r[1]), 1e-13);
    }
    for r in v["ln_beta"].as_array().unwrap() {
        close(special::ln_beta(f(&r[0]), f(&r[1])), f(&r[2]), 1e-11);
    }
    for r in v["beta_inc"].as_array().unwrap() {
        let (a, b, x) = (f(&r[0]), f(&r[1]), f(&r[2]));
        close(special::beta_inc(a, b, x), f(&r[3]), 1e-10);
        close(special::ln_beta_inc_upper(a, b, x).exp(), f(&r[4]), 1e-10);
    }
    for r in v["norm_ppf"].as_array().unwrap() {
        close(special::norm_ppf(f(&r[0])), f(&r[1]), 1e-13);
    }
    // Φ(−30) = erfc(30/√2)/2: the rounding of 30/√2 alone moves the result
    // by about 2x²·ε ≈ 1e-13 relative, so the deep tail gets 1e-12.
    for r in v["norm_cdf"].as_array().unwrap() {
        close(special::norm_cdf(f(&r[0])), f(&r[1]), 1e-12);
        close(special::norm_sf(f(&r[0])), f(&r[2]), 1e-12);
    }
}

/// U and the asymptotic p-value against scipy.stats.mannwhitneyu; the
/// Hodges–Lehmann estimate against numpy's median of pairwise differences;
/// the 98 % interval against R's algorithm on scipy's brentq.
#[test]
fn mann_whitney_fixtures() {
    for case in fixture("mann_whitney.json").as_array().unwrap() {
        let get = |k: &str| -> Vec<f64> { case[k].as_array().unwrap().iter().map(f).collect() };
        let (x, y) = (sorted(&get("canary")), sorted(&get("baseline")));
        let name = case["name"].as_str().unwrap();
        let mw = mann_whitney_sorted(&x, &y).unwrap();
        assert_eq!(mw.u, f(&case["u"]), "{name}");
        close(mw.p_value, f(&case["p_value"]), 1e-10);
        close(
            hodges_lehmann_sorted(&x, &y).unwrap(),
            f(&case["hodges_lehmann"]),
            1e-12,
        );
        let want = get("interval_98");
        let got = shift_interval_sorted(&x, &y, 0.98).unwrap();
        close(got[0], want[0], 1e-6);
        close(got[1], want[1], 1e-6);
    }
}
