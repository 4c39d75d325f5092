//! `eval --tune`: the fusion grid searched honestly. Queries are dealt into k folds by a seeded
//! hash of their ids; each fold is scored with the parameters that did best on the other folds
//! (cross-validation), so the reported figure is on queries the choice never saw. The parameters
//! written into the pipeline are the best on all queries (the usual last step of k-fold), and the
//! family (RRF or linear) is chosen by its held-out score. Pure: legs and judgments in, figures out.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::score;
use crate::query::fusion::{fuse, Fusion, LegHit};
use crate::types::search::{FusionSpec, LinearSpec, Normalization, RrfSpec, Weight};

/// The two fusion families the grid covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Rrf,
    Linear,
}

impl Family {
    /// The grid of this family.
    pub fn grid(self) -> Vec<FusionSpec> {
        match self {
            Family::Rrf => [1u32, 5, 10, 20, 40, 60, 80, 100]
                .iter()
                .map(|c| FusionSpec::Rrf(RrfSpec { rank_constant: *c, window: None }))
                .collect(),
            Family::Linear => {
                let mut g = Vec::new();
                for n in [Normalization::Minmax, Normalization::Zscore, Normalization::L2] {
                    for w in 0..=20 {
                        let weight = Weight::try_from(f64::from(w) / 20.0).expect("in range");
                        g.push(FusionSpec::Linear(LinearSpec { weight, normalization: n }));
                    }
                }
                g
            }
        }
    }
}

/// Each query's two legs (100 deep) and its judgments, aligned by index.
pub struct Legs<'a> {
    pub bm25: Vec<Vec<LegHit>>,
    pub knn: Vec<Vec<LegHit>>,
    pub rels: Vec<&'a BTreeMap<String, u32>>,
    /// The window RRF fuses over (the legs' depth).
    pub depth: usize,
}

impl Legs<'_> {
    /// Query `i` fused with `spec`, best first.
    pub fn ranked(&self, i: usize, spec: &FusionSpec) -> Vec<String> {
        let f = match spec {
            FusionSpec::Rrf(r) => {
                Fusion::Rrf { rank_constant: r.rank_constant, window: r.window.unwrap_or(self.depth) }
            }
            FusionSpec::Linear(l) => Fusion::Linear { weight: l.weight, normalization: l.normalization },
            FusionSpec::Engine(_) => return Vec::new(),
        };
        fuse(&self.bm25[i], &self.knn[i], f).into_iter().map(|h| h.id).collect()
    }

    fn mean_ndcg(&self, queries: &[usize], spec: &FusionSpec) -> f64 {
        let n = queries.len().max(1) as f64;
        queries.iter().map(|&i| score(&self.ranked(i, spec), self.rels[i]).ndcg_at_10).sum::<f64>() / n
    }

    /// The best grid point of `family` on `queries` (the first of equals, in grid order).
    fn best(&self, family: Family, queries: &[usize]) -> (f64, FusionSpec) {
        let mut best: Option<(f64, FusionSpec)> = None;
        for spec in family.grid() {
            let s = self.mean_ndcg(queries, &spec);
            if best.as_ref().is_none_or(|(b, _)| s > *b + 1e-12) {
                best = Some((s, spec));
            }
        }
        best.expect("the grid is not empty")
    }
}

/// Fold of each query: ids ordered by a seeded 64-bit hash (FNV-1a then splitmix64), dealt
/// round-robin, so folds differ in size by at most one and do not depend on file order.
pub fn folds_of(ids: &[String], k: usize, seed: u64) -> Vec<usize> {
    let hash = |id: &str| {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    };
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| (hash(&ids[i]), ids[i].clone()));
    let mut fold = vec![0; ids.len()];
    for (rank, i) in order.into_iter().enumerate() {
        fold[i] = rank % k.max(1);
    }
    fold
}

/// One family's tuning.
#[derive(Clone, Debug)]
pub struct FamilyTuning {
    pub family: Family,
    /// Best on all queries: what gets written.
    pub in_sample: (f64, FusionSpec),
    /// The choice made without each fold, by fold.
    pub per_fold: Vec<FusionSpec>,
    /// Every query ranked with its fold's choice (aligned with the legs).
    pub held_out: Vec<Vec<String>>,
    /// Mean held-out nDCG@10.
    pub held_out_ndcg: f64,
}

/// Cross-validates `family` over the folds `fold` assigns (values `0..k`).
pub fn cross_validate(legs: &Legs<'_>, family: Family, fold: &[usize], k: usize) -> FamilyTuning {
    let all: Vec<usize> = (0..fold.len()).collect();
    let mut held_out = vec![Vec::new(); fold.len()];
    let mut per_fold = Vec::with_capacity(k);
    for f in 0..k {
        let train: Vec<usize> = all.iter().copied().filter(|&i| fold[i] != f).collect();
        let (_, spec) = legs.best(family, &train);
        for i in all.iter().copied().filter(|&i| fold[i] == f) {
            held_out[i] = legs.ranked(i, &spec);
        }
        per_fold.push(spec);
    }
    let n = fold.len().max(1) as f64;
    let held_out_ndcg = held_out.iter().zip(&legs.rels).map(|(r, rel)| score(r, rel).ndcg_at_10).sum::<f64>() / n;
    FamilyTuning { family, in_sample: legs.best(family, &all), per_fold, held_out, held_out_ndcg }
}

/// The `tuned` object of the report.
pub fn summary(t: &[FamilyTuning], k: usize, seed: u64, written: &FusionSpec) -> Value {
    let mut v = json!({
        "method": format!("{k}-fold cross-validation over the split's queries (seed {seed}): each query scored with the fusion tuned on the other folds; the family is chosen by that held-out score, its parameters tuned on all queries are written"),
        "written": written,
    });
    for f in t {
        let name = if f.family == Family::Rrf { "rrf" } else { "linear" };
        v[name] = json!({
            "held_out_ndcg_at_10": f.held_out_ndcg,
            "in_sample_ndcg_at_10": f.in_sample.0,
            "fusion": f.in_sample.1,
            "per_fold": f.per_fold,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f64) -> LegHit {
        LegHit { id: id.into(), score }
    }

    /// Half the queries are answered by BM25 only, half by kNN only.
    fn split_legs(rels: &[BTreeMap<String, u32>]) -> Legs<'_> {
        let n = rels.len();
        let (mut bm25, mut knn) = (Vec::new(), Vec::new());
        for i in 0..n {
            let rel = format!("rel{i}");
            if i < n / 2 {
                bm25.push(vec![hit(&rel, 10.0), hit("a", 9.0), hit("b", 1.0)]);
                knn.push(vec![hit("c", 0.9), hit("d", 0.85), hit("e", 0.2)]);
            } else {
                bm25.push(vec![hit("a", 10.0), hit("b", 9.0), hit("c", 1.0)]);
                knn.push(vec![hit(&rel, 0.9), hit("d", 0.85), hit("e", 0.2)]);
            }
        }
        Legs { bm25, knn, rels: rels.iter().collect(), depth: 100 }
    }

    fn judgments(n: usize) -> Vec<BTreeMap<String, u32>> {
        (0..n).map(|i| BTreeMap::from([(format!("rel{i}"), 1)])).collect()
    }

    #[test]
    fn folds_are_balanced_deterministic_and_follow_the_seed() {
        let ids: Vec<String> = (0..103).map(|i| format!("q{i}")).collect();
        let f = folds_of(&ids, 5, 13);
        assert_eq!(f, folds_of(&ids, 5, 13));
        let sizes: Vec<usize> = (0..5).map(|k| f.iter().filter(|&&x| x == k).count()).collect();
        assert!(sizes.iter().all(|&s| s == 20 || s == 21), "{sizes:?}");
        assert_ne!(f, folds_of(&ids, 5, 14), "another seed deals other folds");
        let mut reversed = ids.clone();
        reversed.reverse();
        let g = folds_of(&reversed, 5, 13);
        assert!(ids.iter().enumerate().all(|(i, _)| f[i] == g[ids.len() - 1 - i]), "file order does not matter");
    }

    /// A fold is never scored with a choice that saw it: when each fold needs the opposite
    /// weighting, the held-out figure falls below the in-sample one; when all queries agree, the
    /// two are equal.
    #[test]
    fn held_out_scores_come_from_choices_made_without_the_fold() {
        let rels = judgments(20);
        let legs = split_legs(&rels);
        let opposite: Vec<usize> = (0..20).map(|i| usize::from(i >= 10)).collect();
        let t = cross_validate(&legs, Family::Linear, &opposite, 2);
        assert!(t.held_out_ndcg < t.in_sample.0 - 0.1, "{} vs {}", t.held_out_ndcg, t.in_sample.0);
        assert_ne!(t.per_fold[0], t.per_fold[1], "each fold's choice fits the other fold");

        let mixed: Vec<usize> = (0..20).map(|i| i % 2).collect();
        let t = cross_validate(&legs, Family::Linear, &mixed, 2);
        assert!((t.held_out_ndcg - t.in_sample.0).abs() < 1e-9, "{} vs {}", t.held_out_ndcg, t.in_sample.0);
        assert_eq!(t.held_out.len(), 20);
        assert!(t.held_out.iter().all(|r| !r.is_empty()));
    }
}
