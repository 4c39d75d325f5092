//! Pooling strategies and L2 normalisation. Pure functions over the model's output tensors.
//!
//! Conventions: hidden states are `[batch, seq, hidden]`, the attention mask `[batch, seq]` with
//! 1 for real tokens and 0 for padding; padding never contributes to a pooled vector.

use ndarray::{ArrayView2, ArrayView3, Axis};

use super::manifest::Pooling;

/// The tensors one batch produced, by role.
#[derive(Clone, Copy, Default)]
pub struct LayerOutputs<'a> {
    pub last: Option<ArrayView3<'a, f32>>,
    pub first: Option<ArrayView3<'a, f32>>,
    pub second_last: Option<ArrayView3<'a, f32>>,
    pub pooler: Option<ArrayView2<'a, f32>>,
}

/// One input's result.
#[derive(Clone, Debug, PartialEq)]
pub enum Pooled {
    Vector(Vec<f32>),
    /// One vector per real token (pooling `none`), `[CLS]` and `[SEP]` included.
    Tokens(Vec<Vec<f32>>),
}

/// Why pooling could not run (the graph lacked an output the manifest promised).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pooling `{pooling}` needs the `{missing}` output, which the model run did not return")]
pub struct MissingOutput {
    pub pooling: Pooling,
    pub missing: &'static str,
}

/// Pools row `row` of the batch.
pub fn pool<'a>(
    strategy: Pooling,
    out: &LayerOutputs<'a>,
    mask: ArrayView2<'_, i64>,
    row: usize,
) -> Result<Pooled, MissingOutput> {
    let need3 = |t: Option<ArrayView3<'a, f32>>, name: &'static str| {
        t.ok_or(MissingOutput { pooling: strategy, missing: name })
    };
    let m = mask.row(row);
    Ok(match strategy {
        Pooling::Cls => Pooled::Vector(need3(out.last, "last_hidden_state")?.index_axis(Axis(0), row).row(0).to_vec()),
        Pooling::Pooler => {
            let p = out.pooler.ok_or(MissingOutput { pooling: strategy, missing: "pooler_output" })?;
            Pooled::Vector(p.row(row).to_vec())
        }
        Pooling::Mean => Pooled::Vector(masked_mean(&[need3(out.last, "last_hidden_state")?], m.as_slice(), row)),
        Pooling::FirstLastAvg => Pooled::Vector(masked_mean(
            &[need3(out.first, "first_hidden_state")?, need3(out.last, "last_hidden_state")?],
            m.as_slice(),
            row,
        )),
        Pooling::Last2Avg => Pooled::Vector(masked_mean(
            &[need3(out.second_last, "second_last_hidden_state")?, need3(out.last, "last_hidden_state")?],
            m.as_slice(),
            row,
        )),
        Pooling::None => {
            let h = need3(out.last, "last_hidden_state")?.index_axis_move(Axis(0), row);
            let tokens =
                h.axis_iter(Axis(0)).zip(m.iter()).filter(|(_, &keep)| keep != 0).map(|(t, _)| t.to_vec()).collect();
            Pooled::Tokens(tokens)
        }
    })
}

/// Masked mean over tokens of the element-wise average of `layers` (one or two layers).
fn masked_mean(layers: &[ArrayView3<'_, f32>], mask: Option<&[i64]>, row: usize) -> Vec<f32> {
    let hidden = layers[0].shape()[2];
    let views: Vec<_> = layers.iter().map(|l| l.index_axis(Axis(0), row)).collect();
    let seq = views[0].shape()[0];
    let mut acc = vec![0f64; hidden];
    let mut count = 0usize;
    for t in 0..seq {
        let keep = mask.map_or(1, |m| m[t]);
        if keep == 0 {
            continue;
        }
        count += 1;
        for v in &views {
            for (a, x) in acc.iter_mut().zip(v.row(t).iter()) {
                *a += f64::from(*x);
            }
        }
    }
    let denom = (count.max(1) * views.len()) as f64;
    acc.into_iter().map(|a| (a / denom) as f32).collect()
}

/// L2-normalises in place; an all-zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 1e-12 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, Array3};
    use proptest::prelude::*;

    use super::*;

    /// The naive oracle: nested loops over plain vectors, no ndarray.
    fn naive(
        strategy: Pooling,
        layers: &[Vec<Vec<Vec<f32>>>],
        pooler: &[Vec<f32>],
        mask: &[Vec<i64>],
        row: usize,
    ) -> Vec<f32> {
        let (first, second_last, last) = (&layers[0], &layers[1], &layers[2]);
        let mean_of = |ls: &[&Vec<Vec<Vec<f32>>>]| {
            let h = ls[0][row][0].len();
            let mut out = vec![0f32; h];
            let n = mask[row].iter().filter(|m| **m != 0).count().max(1) as f32;
            for j in 0..h {
                let mut s = 0f32;
                for (t, m) in mask[row].iter().enumerate() {
                    if *m != 0 {
                        s += ls.iter().map(|l| l[row][t][j]).sum::<f32>() / ls.len() as f32;
                    }
                }
                out[j] = s / n;
            }
            out
        };
        match strategy {
            Pooling::Cls => last[row][0].clone(),
            Pooling::Pooler => pooler[row].clone(),
            Pooling::Mean => mean_of(&[last]),
            Pooling::FirstLastAvg => mean_of(&[first, last]),
            Pooling::Last2Avg => mean_of(&[second_last, last]),
            Pooling::None => unreachable!(),
        }
    }

    fn to3(v: &[Vec<Vec<f32>>]) -> Array3<f32> {
        let (b, s, h) = (v.len(), v[0].len(), v[0][0].len());
        Array3::from_shape_fn((b, s, h), |(i, j, k)| v[i][j][k])
    }

    /// Three layers `[batch][seq][hidden]`, pooler rows, and masks.
    type Layers = Vec<Vec<Vec<Vec<f32>>>>;

    fn batch() -> impl Strategy<Value = (Layers, Vec<Vec<f32>>, Vec<Vec<i64>>)> {
        (1usize..4, 1usize..7, 1usize..6).prop_flat_map(|(b, s, h)| {
            let layer = prop::collection::vec(prop::collection::vec(prop::collection::vec(-4.0f32..4.0, h), s), b);
            let lens = prop::collection::vec(1usize..=s, b);
            (prop::collection::vec(layer, 3), prop::collection::vec(prop::collection::vec(-1.0f32..1.0, h), b), lens)
                .prop_map(move |(layers, pooler, lens)| {
                    let mask = lens.iter().map(|&n| (0..s).map(|t| i64::from(t < n)).collect()).collect();
                    (layers, pooler, mask)
                })
        })
    }

    proptest! {
        #[test]
        fn pooling_matches_the_naive_oracle((layers, pooler, mask) in batch()) {
            let (f, sl, l) = (to3(&layers[0]), to3(&layers[1]), to3(&layers[2]));
            let p = Array2::from_shape_fn((pooler.len(), pooler[0].len()), |(i, j)| pooler[i][j]);
            let m = Array2::from_shape_fn((mask.len(), mask[0].len()), |(i, j)| mask[i][j]);
            let out = LayerOutputs { last: Some(l.view()), first: Some(f.view()), second_last: Some(sl.view()), pooler: Some(p.view()) };
            for strategy in [Pooling::Cls, Pooling::Pooler, Pooling::Mean, Pooling::FirstLastAvg, Pooling::Last2Avg] {
                for row in 0..mask.len() {
                    let Pooled::Vector(got) = pool(strategy, &out, m.view(), row).unwrap() else { panic!() };
                    let want = naive(strategy, &layers, &pooler, &mask, row);
                    prop_assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        prop_assert!((g - w).abs() < 1e-4, "{strategy}: {g} vs {w}");
                    }
                }
            }
        }

        #[test]
        fn token_level_output_keeps_exactly_the_real_tokens((layers, _pooler, mask) in batch()) {
            let l = to3(&layers[2]);
            let m = Array2::from_shape_fn((mask.len(), mask[0].len()), |(i, j)| mask[i][j]);
            let out = LayerOutputs { last: Some(l.view()), ..Default::default() };
            for row in 0..mask.len() {
                let Pooled::Tokens(tokens) = pool(Pooling::None, &out, m.view(), row).unwrap() else { panic!() };
                let n = mask[row].iter().filter(|x| **x != 0).count();
                prop_assert_eq!(tokens.len(), n);
                for (t, tok) in tokens.iter().enumerate() {
                    prop_assert_eq!(tok, &layers[2][row][t]);
                }
            }
        }

        #[test]
        fn normalised_vectors_have_unit_length_and_keep_direction(v in prop::collection::vec(-100.0f32..100.0, 1..64)) {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            prop_assume!(norm > 1e-3);
            let mut u = v.clone();
            l2_normalize(&mut u);
            let n2: f32 = u.iter().map(|x| x * x).sum::<f32>().sqrt();
            prop_assert!((n2 - 1.0).abs() < 1e-4);
            for (a, b) in u.iter().zip(&v) {
                prop_assert!((a * norm - b).abs() < 1e-2 * (1.0 + b.abs()));
            }
        }
    }

    #[test]
    fn zero_vectors_stay_zero_and_missing_outputs_are_errors() {
        let mut z = vec![0.0f32; 4];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 4]);
        let m = Array2::<i64>::ones((1, 2));
        let err = pool(Pooling::Pooler, &LayerOutputs::default(), m.view(), 0).unwrap_err();
        assert_eq!(err.missing, "pooler_output");
    }
}
