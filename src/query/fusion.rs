//! Fusion of a BM25 leg and a kNN leg into one ranking, computed by the sidecar. Pure: ranked
//! hits in, fused hits out, no I/O; so it works on every engine, version and licence.
//!
//! - **RRF**: `score(d) = Σ_leg 1 / (rank_constant + rank_leg(d))`, 1-based ranks, only the top
//!   `window` hits of each leg count.
//! - **Linear**: each leg's scores are normalised (`minmax` to [0, 1], `zscore`, or `l2` — divided by
//!   the leg's L2 norm), then `weight · bm25 + (1 − weight) · knn`. A document missing from a leg
//!   gets that leg's lowest normalised score (0 for minmax and l2, the minimum z for zscore), so it
//!   is never rewarded for being absent.
//!
//! Ties are broken by the better rank on either leg, then by id, so results are deterministic and
//! pagination over the fused list is stable.

use std::collections::BTreeMap;

use crate::types::search::{Normalization, Weight};

/// One hit of one leg, in rank order.
#[derive(Clone, Debug, PartialEq)]
pub struct LegHit {
    pub id: String,
    pub score: f64,
}

/// A fusion method and its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fusion {
    Rrf { rank_constant: u32, window: usize },
    Linear { weight: Weight, normalization: Normalization },
}

/// A fused hit, with what each leg said about it (for `explain`).
#[derive(Clone, Debug, PartialEq)]
pub struct FusedHit {
    pub id: String,
    pub score: f64,
    /// (1-based rank, raw score) on the BM25 leg.
    pub bm25: Option<(usize, f64)>,
    /// (1-based rank, raw score) on the kNN leg.
    pub knn: Option<(usize, f64)>,
    /// What each leg added to `score` (BM25, kNN); they sum to it. RRF: `1 / (c + rank)` or 0;
    /// linear: the weighted normalised score, or the weighted floor when the hit is missing.
    pub parts: (f64, f64),
}

impl FusedHit {
    fn best_rank(&self) -> usize {
        self.bm25.map_or(usize::MAX, |b| b.0).min(self.knn.map_or(usize::MAX, |k| k.0))
    }
}

/// Ranks of the first occurrence of each id (a leg should not repeat ids; if it does, the first wins).
fn ranks(leg: &[LegHit]) -> BTreeMap<&str, (usize, f64)> {
    let mut m = BTreeMap::new();
    for (i, h) in leg.iter().enumerate() {
        m.entry(h.id.as_str()).or_insert((i + 1, h.score));
    }
    m
}

fn normalize(scores: &[f64], how: Normalization) -> (Vec<f64>, f64) {
    if scores.is_empty() {
        return (Vec::new(), 0.0);
    }
    match how {
        Normalization::Minmax => {
            let (lo, hi) = scores.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &s| (l.min(s), h.max(s)));
            let span = hi - lo;
            // All equal: everyone on the leg is equally good, and better than absent.
            let v = scores.iter().map(|&s| if span > 0.0 { (s - lo) / span } else { 1.0 }).collect();
            (v, 0.0)
        }
        Normalization::Zscore => {
            let n = scores.len() as f64;
            let mean = scores.iter().sum::<f64>() / n;
            let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
            let v: Vec<f64> = scores.iter().map(|&s| if sd > 0.0 { (s - mean) / sd } else { 0.0 }).collect();
            let floor = v.iter().copied().fold(f64::INFINITY, f64::min);
            (v, floor)
        }
        Normalization::L2 => {
            let norm = scores.iter().map(|s| s * s).sum::<f64>().sqrt();
            let v = scores.iter().map(|&s| if norm > 0.0 { s / norm } else { 0.0 }).collect();
            (v, 0.0)
        }
    }
}

/// A leg's normalised scores by id, and the floor for ids missing from it.
fn norm_leg<'a>(m: &BTreeMap<&'a str, (usize, f64)>, how: Normalization) -> (BTreeMap<&'a str, f64>, f64) {
    let keys: Vec<&'a str> = m.keys().copied().collect();
    let raw: Vec<f64> = keys.iter().map(|k| m[k].1).collect();
    let (v, floor) = normalize(&raw, how);
    (keys.into_iter().zip(v).collect(), floor)
}

/// Fuses the two legs; the result is sorted best first.
pub fn fuse(bm25: &[LegHit], knn: &[LegHit], fusion: Fusion) -> Vec<FusedHit> {
    let (rb, rk) = (ranks(bm25), ranks(knn));
    let mut ids: Vec<&str> = rb.keys().chain(rk.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    // Linear fusion's normalised legs and their floors, computed once (empty for RRF).
    let ((nb, fb), (nk, fk)) = match fusion {
        Fusion::Linear { normalization, .. } => (norm_leg(&rb, normalization), norm_leg(&rk, normalization)),
        Fusion::Rrf { .. } => Default::default(),
    };
    // What each leg adds for an id; `None` leaves the id out (beyond the RRF window on both legs).
    let parts = |id: &str| -> Option<(f64, f64)> {
        match fusion {
            Fusion::Rrf { rank_constant, window } => {
                let c = f64::from(rank_constant);
                let part = |r: Option<&(usize, f64)>| {
                    r.filter(|(rank, _)| *rank <= window).map(|(rank, _)| 1.0 / (c + *rank as f64))
                };
                match (part(rb.get(id)), part(rk.get(id))) {
                    (None, None) => None,
                    (b, k) => Some((b.unwrap_or(0.0), k.unwrap_or(0.0))),
                }
            }
            Fusion::Linear { weight, .. } => {
                let w = f64::from(weight);
                Some((w * nb.get(id).copied().unwrap_or(fb), (1.0 - w) * nk.get(id).copied().unwrap_or(fk)))
            }
        }
    };
    let mut out: Vec<FusedHit> = ids
        .iter()
        .filter_map(|id| {
            let parts = parts(id)?;
            Some(FusedHit {
                id: id.to_string(),
                score: parts.0 + parts.1,
                bm25: rb.get(id).copied(),
                knn: rk.get(id).copied(),
                parts,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.score.total_cmp(&a.score).then_with(|| a.best_rank().cmp(&b.best_rank())).then_with(|| a.id.cmp(&b.id))
    });
    out
}

/// How [`fuse_lists`] combines its lists: Elasticsearch's `rrf` and `linear` retrievers (and
/// OpenSearch's score-ranker / normalisation processors), over any number of ranked lists.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Combine {
    /// `Σ weight_i / (rank_constant + rank_i)`.
    Rrf { rank_constant: u32 },
    /// `Σ weight_i · normalised_i(score)`; a list missing a document adds its floor (0, or the
    /// lowest z for `zscore`).
    Linear,
}

/// One ranked list given to [`fuse_lists`], with its weight and (linear) normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedList {
    pub hits: Vec<LegHit>,
    pub weight: f64,
    /// `None`: the raw scores (Elasticsearch's `none` normalizer).
    pub normalization: Option<Normalization>,
}

/// A document fused from several lists: its score and, per list, its (1-based rank, raw score).
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub id: String,
    pub score: f64,
    pub ranks: Vec<Option<(usize, f64)>>,
}

/// Fuses any number of ranked lists (each already cut to its window), best first; ties by the
/// best rank on any list, then id. With two lists, weights `(w, 1 − w)` and a normalisation, or
/// weights 1 and RRF, it ranks as [`fuse`] does.
pub fn fuse_lists(lists: &[WeightedList], combine: Combine) -> Vec<Ranked> {
    let ranked: Vec<BTreeMap<&str, (usize, f64)>> = lists.iter().map(|l| ranks(&l.hits)).collect();
    let normed: Vec<(BTreeMap<&str, f64>, f64)> = lists
        .iter()
        .zip(&ranked)
        .map(|(l, r)| match (combine, l.normalization) {
            (Combine::Linear, Some(n)) => norm_leg(r, n),
            _ => (r.iter().map(|(k, v)| (*k, v.1)).collect(), 0.0),
        })
        .collect();
    let mut ids: Vec<&str> = ranked.iter().flat_map(|r| r.keys().copied()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out: Vec<Ranked> = ids
        .into_iter()
        .map(|id| {
            let ranks: Vec<Option<(usize, f64)>> = ranked.iter().map(|r| r.get(id).copied()).collect();
            let score = lists
                .iter()
                .enumerate()
                .map(|(i, l)| match combine {
                    Combine::Rrf { rank_constant } => {
                        ranks[i].map_or(0.0, |(r, _)| l.weight / (f64::from(rank_constant) + r as f64))
                    }
                    Combine::Linear => l.weight * normed[i].0.get(id).copied().unwrap_or(normed[i].1),
                })
                .sum();
            Ranked { id: id.to_string(), score, ranks }
        })
        .collect();
    let best = |r: &Ranked| r.ranks.iter().flatten().map(|x| x.0).min().unwrap_or(usize::MAX);
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| best(a).cmp(&best(b))).then_with(|| a.id.cmp(&b.id)));
    out
}

/// The page `[from, from + size)` of a fused list.
pub fn page(fused: &[FusedHit], from: usize, size: usize) -> &[FusedHit] {
    let start = from.min(fused.len());
    let end = from.saturating_add(size).min(fused.len());
    &fused[start..end]
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn leg(ids: &[(&str, f64)]) -> Vec<LegHit> {
        ids.iter().map(|(id, s)| LegHit { id: id.to_string(), score: *s }).collect()
    }

    #[test]
    fn many_lists_rank_as_two_legs_do() {
        let b = leg(&[("a", 3.0), ("b", 2.0), ("c", 1.0)]);
        let k = leg(&[("c", 0.9), ("d", 0.8), ("a", 0.1)]);
        let list = |hits: &[LegHit], weight, normalization| WeightedList { hits: hits.to_vec(), weight, normalization };
        let ids = |v: Vec<String>| v;
        let two = fuse(&b, &k, Fusion::Rrf { rank_constant: 60, window: 10 });
        let many = fuse_lists(&[list(&b, 1.0, None), list(&k, 1.0, None)], Combine::Rrf { rank_constant: 60 });
        assert_eq!(ids(two.iter().map(|h| h.id.clone()).collect()), ids(many.iter().map(|h| h.id.clone()).collect()));
        for (x, y) in two.iter().zip(&many) {
            assert!((x.score - y.score).abs() < 1e-12);
        }
        let w = Weight::try_from(0.3).unwrap();
        let two = fuse(&b, &k, Fusion::Linear { weight: w, normalization: Normalization::Minmax });
        let many = fuse_lists(
            &[list(&b, 0.3, Some(Normalization::Minmax)), list(&k, 0.7, Some(Normalization::Minmax))],
            Combine::Linear,
        );
        for (x, y) in two.iter().zip(&many) {
            assert_eq!(x.id, y.id);
            assert!((x.score - y.score).abs() < 1e-9, "{x:?} {y:?}");
        }
        // a weight scales a list's say; no normalisation sums the raw scores
        let raw = fuse_lists(&[list(&b, 2.0, None), list(&k, 1.0, None)], Combine::Linear);
        assert_eq!(raw[0].id, "a");
        assert!((raw[0].score - 6.1).abs() < 1e-12);
        assert_eq!(raw[0].ranks, vec![Some((1, 3.0)), Some((3, 0.1))]);
    }

    /// The naive oracle: hash maps and explicit formulas, no shared helpers.
    fn oracle(bm25: &[LegHit], knn: &[LegHit], fusion: Fusion) -> HashMap<String, f64> {
        let mut first_b: HashMap<String, (usize, f64)> = HashMap::new();
        for (i, h) in bm25.iter().enumerate() {
            first_b.entry(h.id.clone()).or_insert((i + 1, h.score));
        }
        let mut first_k: HashMap<String, (usize, f64)> = HashMap::new();
        for (i, h) in knn.iter().enumerate() {
            first_k.entry(h.id.clone()).or_insert((i + 1, h.score));
        }
        let mut all: Vec<String> = first_b.keys().chain(first_k.keys()).cloned().collect();
        all.sort();
        all.dedup();
        let mut out = HashMap::new();
        match fusion {
            Fusion::Rrf { rank_constant, window } => {
                for id in all {
                    let mut s = 0.0;
                    let mut counted = false;
                    for m in [&first_b, &first_k] {
                        if let Some((r, _)) = m.get(&id) {
                            if *r <= window {
                                s += 1.0 / (rank_constant as f64 + *r as f64);
                                counted = true;
                            }
                        }
                    }
                    if counted {
                        out.insert(id, s);
                    }
                }
            }
            Fusion::Linear { weight, normalization } => {
                let norm = |m: &HashMap<String, (usize, f64)>| -> (HashMap<String, f64>, f64) {
                    let vals: Vec<f64> = m.values().map(|v| v.1).collect();
                    if vals.is_empty() {
                        return (HashMap::new(), 0.0);
                    }
                    let mut res = HashMap::new();
                    let mut floor = 0.0;
                    match normalization {
                        Normalization::Minmax => {
                            let lo = vals.iter().cloned().fold(f64::MAX, f64::min);
                            let hi = vals.iter().cloned().fold(f64::MIN, f64::max);
                            for (k, v) in m {
                                res.insert(k.clone(), if hi > lo { (v.1 - lo) / (hi - lo) } else { 1.0 });
                            }
                        }
                        Normalization::Zscore => {
                            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                            let var = vals.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / vals.len() as f64;
                            let sd = var.sqrt();
                            for (k, v) in m {
                                res.insert(k.clone(), if sd > 0.0 { (v.1 - mean) / sd } else { 0.0 });
                            }
                            floor = res.values().cloned().fold(f64::MAX, f64::min);
                        }
                        Normalization::L2 => {
                            let n = vals.iter().map(|x| x * x).sum::<f64>().sqrt();
                            for (k, v) in m {
                                res.insert(k.clone(), if n > 0.0 { v.1 / n } else { 0.0 });
                            }
                        }
                    }
                    (res, floor)
                };
                let ((nb, fb), (nk, fk)) = (norm(&first_b), norm(&first_k));
                for id in all {
                    let b = nb.get(&id).cloned().unwrap_or(fb);
                    let k = nk.get(&id).cloned().unwrap_or(fk);
                    out.insert(id, f64::from(weight) * b + (1.0 - f64::from(weight)) * k);
                }
            }
        }
        out
    }

    fn legs() -> impl Strategy<Value = (Vec<LegHit>, Vec<LegHit>)> {
        let hit = (0u8..30, -5.0f64..50.0).prop_map(|(i, s)| LegHit { id: format!("d{i}"), score: s });
        (prop::collection::vec(hit.clone(), 0..25), prop::collection::vec(hit, 0..25))
    }

    fn fusions() -> impl Strategy<Value = Fusion> {
        prop_oneof![
            (1u32..100, 1usize..30).prop_map(|(c, w)| Fusion::Rrf { rank_constant: c, window: w }),
            (
                0.0f64..=1.0,
                prop_oneof![Just(Normalization::Minmax), Just(Normalization::Zscore), Just(Normalization::L2)]
            )
                .prop_map(|(w, n)| Fusion::Linear { weight: Weight::try_from(w).unwrap(), normalization: n }),
        ]
    }

    proptest! {
        #[test]
        fn fused_scores_match_the_naive_oracle((b, k) in legs(), f in fusions()) {
            let fused = fuse(&b, &k, f);
            let want = oracle(&b, &k, f);
            prop_assert_eq!(fused.len(), want.len());
            for h in &fused {
                let w = want[&h.id];
                prop_assert!((h.score - w).abs() < 1e-9, "{}: {} vs {}", h.id, h.score, w);
                prop_assert!((h.parts.0 + h.parts.1 - h.score).abs() < 1e-12, "parts add up for {}", h.id);
            }
            // sorted best first, deterministic ties
            for pair in fused.windows(2) {
                prop_assert!(pair[0].score >= pair[1].score);
            }
            prop_assert_eq!(fuse(&b, &k, f), fused);
        }

        #[test]
        fn pages_concatenate_to_the_whole_list((b, k) in legs(), f in fusions(), size in 1usize..7) {
            let fused = fuse(&b, &k, f);
            let mut joined = Vec::new();
            let mut from = 0;
            while from < fused.len() + size {
                joined.extend_from_slice(page(&fused, from, size));
                from += size;
            }
            prop_assert_eq!(joined, fused);
        }
    }

    #[test]
    fn rrf_rewards_agreement_and_respects_the_window() {
        let b = leg(&[("a", 9.0), ("b", 8.0), ("c", 7.0)]);
        let k = leg(&[("b", 0.9), ("d", 0.8), ("a", 0.7)]);
        let f = fuse(&b, &k, Fusion::Rrf { rank_constant: 60, window: 10 });
        assert_eq!(f[0].id, "b", "second on BM25 and first on kNN beats first and third");
        assert_eq!(f[0].bm25, Some((2, 8.0)));
        assert_eq!(f[0].knn, Some((1, 0.9)));
        let narrow = fuse(&b, &k, Fusion::Rrf { rank_constant: 60, window: 1 });
        let ids: Vec<&str> = narrow.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"], "only each leg's first hit counts");
    }

    #[test]
    fn linear_weight_moves_between_the_legs_and_missing_hits_get_the_floor() {
        let b = leg(&[("a", 10.0), ("b", 5.0), ("c", 0.0)]);
        let k = leg(&[("c", 0.9), ("b", 0.5), ("d", 0.1)]);
        let lin =
            |w: f64| Fusion::Linear { weight: Weight::try_from(w).unwrap(), normalization: Normalization::Minmax };
        assert_eq!(fuse(&b, &k, lin(1.0))[0].id, "a", "all BM25");
        assert_eq!(fuse(&b, &k, lin(0.0))[0].id, "c", "all kNN");
        let half = fuse(&b, &k, lin(0.5));
        let d = half.iter().find(|h| h.id == "d").unwrap();
        assert_eq!(d.score, 0.0, "d is last on kNN (0) and absent from BM25 (floor 0)");
        assert!(fuse(&[], &k, lin(0.5)).iter().all(|h| h.bm25.is_none()));
    }

    #[test]
    fn weights_outside_zero_to_one_are_refused() {
        assert!(Weight::try_from(1.5).unwrap_err().contains("between 0 and 1"));
        assert!(Weight::try_from(-0.1).is_err());
        assert!(Weight::try_from(f64::NAN).is_err());
        assert!(serde_json::from_str::<Weight>("0.3").is_ok());
        assert!(serde_json::from_str::<Weight>("2").is_err());
    }

    #[test]
    fn ties_break_by_best_rank_then_id() {
        let b = leg(&[("x", 1.0), ("y", 1.0)]);
        let f = fuse(
            &b,
            &[],
            Fusion::Linear { weight: Weight::try_from(1.0).unwrap(), normalization: Normalization::Minmax },
        );
        assert_eq!(f.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), vec!["x", "y"]);
    }
}
