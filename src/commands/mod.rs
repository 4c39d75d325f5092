//! The command floor: what `semantic-sidecar SUBCOMMAND` runs, one file per command. `main.rs`
//! parses the command line and calls one of these; nothing in the library below calls up here.
//!
//! - [`serve`]: the HTTP service (process edges: signals, the URL file);
//! - [`config`]: `config check`;
//! - [`embed`], [`whiten`]: offline encoding and BERT-whitening (file formats in [`files`]);
//! - [`index`]: `index create|check`;
//! - [`pipeline`]: `pipeline put|get|list|delete` (the cluster's pipelines);
//! - [`reindex`]: one reindex job with a progress bar;
//! - [`eval`]: retrieval quality through the sidecar (`eval`, `compare`, `--tune`);
//! - [`bench`]: `bench encode`, `bench search` and their child-process load generators.
//!
//! Commands are edges of the program, so their errors are `anyhow` with context; shared setup
//! (model resolution, loading encoders) is `crate::setup`, not here.

pub mod bench;
pub mod config;
pub mod embed;
pub mod eval;
pub mod files;
pub mod index;
pub mod pipeline;
pub mod reindex;
pub mod serve;
pub mod whiten;

/// The small runtime the offline commands run the encoder and engine client in.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}
