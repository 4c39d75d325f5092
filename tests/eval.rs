//! `eval` end to end on a 200-document SciFact subset (train judgments), against the real node and
//! model: built twice from scratch, the metrics agree to 4 decimals; `--tune` scores its rows on
//! held-out folds (each query ranked with fusion tuned on the other folds), stays within 0.02 of
//! the defaults there, reports the same held-out figure in its summary and writes the family that
//! won on held-out queries into the pipeline; BM25 matches the
//! committed figures exactly (to 4 decimals) and the vector modes within 0.002 (ONNX Runtime's
//! float kernels differ in the last bits between CPU generations, which can swap near-ties).

mod common;

use std::path::PathBuf;

use common::{encoder_settings, engine_url, unique_index};
use semantic_sidecar::commands::eval::{run, EvalMode, EvalOptions, Report};
use semantic_sidecar::types::pipeline::Pipeline;
use semantic_sidecar::types::search::FusionSpec;
use serde_json::Value;

fn row<'a>(r: &'a Report, mode: &str) -> &'a semantic_sidecar::commands::eval::Scores {
    &r.rows.iter().find(|x| x.mode == mode).unwrap().scores
}

fn r4(x: f64) -> String {
    format!("{x:.4}")
}

#[tokio::test]
async fn eval_on_a_200_document_subset_is_reproducible_to_four_decimals() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = tmp.path().join("scifact.toml");
    std::fs::copy(root.join("pipelines/scifact.toml"), &pipeline).unwrap();
    // start from the defaults whatever the committed pipeline was tuned to
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let cut = text.find("\n[search]").unwrap_or(text.len());
    std::fs::write(&pipeline, &text[..cut]).unwrap();
    let settings = encoder_settings(&[("SIDECAR__ENGINE__URLS", &engine_url())]);
    let index = unique_index("eval");
    let opts = |tune: bool, out: &str| EvalOptions {
        dataset: root.join("../shared/data/scifact"),
        split: "train".into(),
        modes: vec![EvalMode::Bm25, EvalMode::Knn, EvalMode::HybridRrf, EvalMode::HybridLinear],
        pipeline: pipeline.clone(),
        model: None,
        query_model: None,
        index: Some(index.clone()),
        recreate: true,
        max_docs: Some(200),
        tune,
        folds: 5,
        seed: 13,
        out: tmp.path().join(out),
        progress: false,
    };
    let a = run(settings.clone(), &opts(false, "a")).await.unwrap();
    println!("{}", a.markdown());
    let b = run(settings, &opts(true, "b")).await.unwrap();
    println!("{}\ntuned: {}", b.markdown(), b.tuned.as_ref().unwrap());
    assert_eq!((a.documents, a.queries), (200, b.queries));
    assert_eq!(a.model, "all-MiniLM-L6-v2");
    for mode in ["bm25", "knn"] {
        let (x, y) = (row(&a, mode), row(&b, mode));
        assert_eq!(
            (r4(x.ndcg_at_10), r4(x.recall_at_100), r4(x.mrr_at_10)),
            (r4(y.ndcg_at_10), r4(y.recall_at_100), r4(y.mrr_at_10)),
            "{mode} differs between two fresh builds"
        );
    }
    let tuned = b.tuned.as_ref().unwrap();
    for (mode, family) in [("hybrid-rrf", "rrf"), ("hybrid-linear", "linear")] {
        let r = b.rows.iter().find(|x| x.mode == mode).unwrap();
        assert_eq!(r.scored_on, "held-out (5-fold)", "{mode}");
        assert_eq!(a.rows.iter().find(|x| x.mode == mode).unwrap().scored_on, "all queries");
        let held_out = tuned[family]["held_out_ndcg_at_10"].as_f64().unwrap();
        assert!(
            (held_out - r.scores.ndcg_at_10).abs() < 1e-9,
            "{mode}: summary {held_out} vs row {}",
            r.scores.ndcg_at_10
        );
        let default = row(&a, mode).ndcg_at_10;
        assert!(
            held_out >= default - 0.02,
            "{mode}: held-out tuned {held_out:.4} is far below the default {default:.4}"
        );
        assert_eq!(tuned[family]["per_fold"].as_array().unwrap().len(), 5, "{mode}");
    }
    let winner = if tuned["rrf"]["held_out_ndcg_at_10"].as_f64() > tuned["linear"]["held_out_ndcg_at_10"].as_f64() {
        "rrf"
    } else {
        "linear"
    };
    let written = Pipeline::load(&pipeline).unwrap().search.fusion.expect("tune writes [search] fusion");
    assert_eq!(serde_json::to_value(&written).unwrap(), tuned[winner]["fusion"], "the held-out winner is written");
    assert_eq!(tuned["written"], tuned[winner]["fusion"]);
    assert!(matches!(written, FusionSpec::Rrf(_) | FusionSpec::Linear(_)));
    for f in ["eval.md", "eval.json", "eval.png"] {
        assert!(tmp.path().join("b").join(f).is_file(), "{f} not written");
    }
    let png = std::fs::read(tmp.path().join("b/eval.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/data/eval_scifact_200.json")).unwrap()).unwrap();
    assert_eq!(expected["queries"], a.queries);
    for mode in ["bm25", "knn", "hybrid-rrf", "hybrid-linear"] {
        let want = &expected["defaults"][mode];
        let got = row(&a, mode);
        for (k, v) in
            [("ndcg_at_10", got.ndcg_at_10), ("recall_at_100", got.recall_at_100), ("mrr_at_10", got.mrr_at_10)]
        {
            let w = want[k].as_f64().unwrap();
            if mode == "bm25" {
                assert_eq!(r4(v), r4(w), "{mode} {k}");
            } else {
                assert!((v - w).abs() <= 0.002, "{mode} {k}: {v:.4} vs committed {w:.4}");
            }
        }
    }
}
