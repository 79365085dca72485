//! Summary statistics the bench binaries print: a distribution's size, percentiles, maximum and
//! mean.

use serde::Serialize;

/// A distribution of measurements.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Dist {
    /// How many values.
    pub n: usize,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The distribution of `v` (all zero when empty).
pub fn dist(mut v: Vec<f64>) -> Dist {
    if v.is_empty() {
        return Dist::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Dist {
        n: v.len(),
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_empty_is_zero() {
        let d = dist((1..=100).map(f64::from).collect());
        assert_eq!((d.n, d.p50, d.p90, d.p99, d.max), (100, 51.0, 90.0, 99.0, 100.0));
        assert_eq!(d.mean, 50.5);
        assert_eq!(dist(Vec::new()), Dist::default());
    }
}
