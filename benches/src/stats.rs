//! Summaries of repeated measurements: medians (what the tables show),
//! with min, max and quartiles for the spread.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p25: f64,
    pub p75: f64,
}

/// Linear-interpolated quantile of sorted data (q in 0..=1).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// `None` for no samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        n: s.len(),
        median: quantile(&s, 0.5),
        min: s[0],
        max: s[s.len() - 1],
        p25: quantile(&s, 0.25),
        p75: quantile(&s, 0.75),
    })
}

pub fn median(samples: &[f64]) -> Option<f64> {
    summarize(samples).map(|s| s.median)
}

/// JSON: the summary plus the raw samples (in run order), rounded to
/// `decimals` places.
pub fn to_json(samples: &[f64], unit: &str, decimals: i32) -> Value {
    let r = |x: f64| {
        let f = 10f64.powi(decimals);
        (x * f).round() / f
    };
    match summarize(samples) {
        Some(s) => json!({
            "unit": unit,
            "n": s.n,
            "median": r(s.median),
            "min": r(s.min),
            "p25": r(s.p25),
            "p75": r(s.p75),
            "max": r(s.max),
            "samples": samples.iter().map(|&x| r(x)).collect::<Vec<_>>(),
        }),
        None => json!({ "unit": unit, "n": 0, "samples": [] }),
    }
}

/// `a / b`, or `None` when either is missing or `b` is zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// A table cell: the value with `decimals` places, or `-`.
pub fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        let s = summarize(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(summarize(&[]), None);
        let s = summarize(&[0.0, 10.0, 20.0, 30.0, 40.0]).unwrap();
        assert_eq!((s.p25, s.p75), (10.0, 30.0));
    }

    #[test]
    fn ratios_and_cells() {
        assert_eq!(ratio(Some(6.0), Some(3.0)), Some(2.0));
        assert_eq!(ratio(Some(6.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(cell(Some(1.234), 2), "1.23");
        assert_eq!(cell(None, 2), "-");
        let j = to_json(&[1.0, 2.0, 3.0], "ms", 1);
        assert_eq!(j["median"], 2.0);
        assert_eq!(j["samples"].as_array().unwrap().len(), 3);
    }
}
