//! BERT-whitening: `y = (x − μ) · W[:, :k]` with `W = U · diag(1/√s)` from the SVD of the
//! covariance of a sample of pooled vectors (Su et al., 2021). Makes the sample's mean zero and
//! its covariance the identity, and optionally keeps only the `k` strongest components.
//!
//! Pure: `fit` takes vectors, `apply` maps one vector; files are read and written by the caller.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::EncoderError;

/// Mean and whitening matrix (`dims_in × dims_in`, columns ordered by decreasing variance).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WhiteningFile {
    pub mean: Vec<f32>,
    /// Row-major, `dims_in` rows of `dims_in` columns.
    pub matrix: Vec<Vec<f32>>,
    pub fit_count: usize,
}

/// A loaded transform, already cut to `k` output components.
#[derive(Clone, Debug)]
pub struct Whitening {
    mean: Vec<f32>,
    /// `dims_in × k`, row-major.
    w: Vec<f32>,
    k: usize,
}

impl Whitening {
    pub fn from_file(file: &WhiteningFile, k: Option<usize>) -> Result<Self, EncoderError> {
        let d = file.mean.len();
        let bad = |r: String| EncoderError::Whitening(r);
        if d == 0 || file.matrix.len() != d || file.matrix.iter().any(|r| r.len() != d) {
            return Err(bad(format!("the matrix must be {d} × {d} to match the mean")));
        }
        let k = k.unwrap_or(d);
        if k == 0 || k > d {
            return Err(bad(format!("dims {k} must be between 1 and {d}")));
        }
        let w = file.matrix.iter().flat_map(|row| row[..k].iter().copied()).collect();
        Ok(Whitening { mean: file.mean.clone(), w, k })
    }

    pub fn input_dims(&self) -> usize {
        self.mean.len()
    }

    pub fn output_dims(&self) -> usize {
        self.k
    }

    /// Whitens one vector (length `input_dims`).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; self.k];
        for (i, (xi, mi)) in x.iter().zip(&self.mean).enumerate() {
            let c = xi - mi;
            let row = &self.w[i * self.k..(i + 1) * self.k];
            for (yj, wij) in y.iter_mut().zip(row) {
                *yj += c * wij;
            }
        }
        y
    }
}

/// Fits the transform on a sample (at least two vectors, all of one length).
pub fn fit(sample: &[Vec<f32>]) -> Result<WhiteningFile, EncoderError> {
    let n = sample.len();
    let d = sample.first().map_or(0, Vec::len);
    if n < 2 || d == 0 || sample.iter().any(|v| v.len() != d) {
        return Err(EncoderError::Whitening(format!("need at least 2 vectors of one length, got {n}")));
    }
    let x = DMatrix::<f64>::from_fn(n, d, |i, j| f64::from(sample[i][j]));
    let mean: DVector<f64> = x.row_mean().transpose();
    let centred = DMatrix::<f64>::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
    let cov = centred.transpose() * &centred / n as f64;
    let svd = cov.svd(true, false);
    let u = svd.u.ok_or_else(|| EncoderError::Whitening("SVD did not converge".into()))?;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let floor = 1e-12 * svd.singular_values.max().max(1e-300);
    let matrix = (0..d)
        .map(|i| order.iter().map(|&j| (u[(i, j)] / svd.singular_values[j].max(floor).sqrt()) as f32).collect())
        .collect();
    Ok(WhiteningFile { mean: mean.iter().map(|m| *m as f32).collect(), matrix, fit_count: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
        // correlated, shifted, anisotropic data from a small deterministic generator
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
        };
        (0..n)
            .map(|_| {
                let z: Vec<f32> = (0..d).map(|_| next()).collect();
                (0..d).map(|j| 3.0 + z[j] * (j + 1) as f32 + 0.5 * z[(j + 1) % d]).collect()
            })
            .collect()
    }

    fn stats(ys: &[Vec<f32>]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let n = ys.len() as f64;
        let k = ys[0].len();
        let mean: Vec<f64> = (0..k).map(|j| ys.iter().map(|y| f64::from(y[j])).sum::<f64>() / n).collect();
        let cov = (0..k)
            .map(|a| {
                (0..k)
                    .map(|b| {
                        ys.iter().map(|y| (f64::from(y[a]) - mean[a]) * (f64::from(y[b]) - mean[b])).sum::<f64>() / n
                    })
                    .collect()
            })
            .collect();
        (mean, cov)
    }

    #[test]
    fn the_fit_sample_comes_out_with_zero_mean_and_identity_covariance() {
        let xs = sample(400, 8, 7);
        let file = fit(&xs).unwrap();
        let w = Whitening::from_file(&file, None).unwrap();
        let ys: Vec<Vec<f32>> = xs.iter().map(|x| w.apply(x)).collect();
        let (mean, cov) = stats(&ys);
        for (a, row) in cov.iter().enumerate() {
            assert!(mean[a].abs() < 1e-3, "mean[{a}] = {}", mean[a]);
            for (b, c) in row.iter().enumerate() {
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 1e-3, "cov[{a}][{b}] = {c}");
            }
        }
    }

    #[test]
    fn reduction_keeps_the_strongest_components() {
        let xs = sample(300, 6, 11);
        let file = fit(&xs).unwrap();
        let w = Whitening::from_file(&file, Some(3)).unwrap();
        assert_eq!((w.input_dims(), w.output_dims()), (6, 3));
        let ys: Vec<Vec<f32>> = xs.iter().map(|x| w.apply(x)).collect();
        let (_, cov) = stats(&ys);
        for (a, row) in cov.iter().enumerate() {
            assert!((row[a] - 1.0).abs() < 1e-3);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(fit(&[vec![1.0, 2.0]]).is_err());
        assert!(fit(&[vec![1.0], vec![1.0, 2.0]]).is_err());
        let file = fit(&sample(10, 3, 1)).unwrap();
        assert!(Whitening::from_file(&file, Some(4)).is_err());
        let mut broken = file.clone();
        broken.matrix.pop();
        assert!(Whitening::from_file(&broken, None).is_err());
    }
}
