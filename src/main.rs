//! The `semantic-sidecar` binary: command-line parsing and process edges (`anyhow` lives here).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use semantic_sidecar::cli;
use semantic_sidecar::encoder::{EncoderSet, TextKind};
use semantic_sidecar::engine::EngineClient;
use semantic_sidecar::http::{self, AppState};
use semantic_sidecar::settings::{LogFormat, Settings};
use semantic_sidecar::telemetry::{self, Metrics};

#[derive(Parser)]
#[command(name = "semantic-sidecar", version, about = "Semantic and hybrid search beside Elasticsearch / OpenSearch")]
struct Cli {
    /// TOML configuration file, layered over the embedded defaults (env SIDECAR__* wins over both).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format; overrides `log.format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        /// Write the server's base URL (e.g. http://127.0.0.1:8080) to this file once it listens.
        #[arg(long, value_name = "FILE")]
        url_file: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Embed a file of texts (.txt lines or .jsonl) into a file of vectors (.jsonl or .npy).
    Embed {
        /// A model folder (with model.toml) or the name of a model in encoder.models.
        #[arg(long)]
        model: String,
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// The JSON field holding the text in .jsonl input.
        #[arg(long, default_value = "text")]
        field: String,
        /// Which manifest prefix to apply.
        #[arg(long, value_enum, default_value = "passage")]
        kind: KindArg,
    },
    /// Indices for pipelines.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Benchmarks (not tests); see scripts/bench-encode.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Retrieval quality on a BEIR-format folder, through the sidecar's own ingest and /search:
    /// nDCG@10, Recall@100 and MRR@10 per mode, as a markdown table and a PNG bar chart.
    Eval {
        /// Folder with corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv.
        #[arg(long, value_name = "DIR")]
        dataset: PathBuf,
        #[arg(long, default_value = "test")]
        split: String,
        /// Comma-separated: bm25, knn, hybrid-rrf, hybrid-linear, hybrid-engine.
        #[arg(long, default_value = "bm25,knn,hybrid-rrf,hybrid-linear")]
        modes: String,
        /// The pipeline file (index, model, fields); `--tune` writes its [search] fusion.
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
        /// Use this model instead of the pipeline's (give it its own --index).
        #[arg(long)]
        model: Option<String>,
        /// Embed the queries with this model (a static int8 copy of the field's model,
        /// `[search] query_model`); the index and its vectors stay the same, so it can be reused.
        #[arg(long)]
        query_model: Option<String>,
        /// Use this index instead of the pipeline's.
        #[arg(long)]
        index: Option<String>,
        /// Delete and rebuild the index even when it exists (otherwise an existing one is reused).
        #[arg(long)]
        recreate: bool,
        /// Index a deterministic subset: the judged documents of as many queries as fit, then others.
        #[arg(long, value_name = "N")]
        max_docs: Option<usize>,
        /// Grid-search the fusion parameters on this split with k-fold cross-validation: the hybrid
        /// rows are scored on held-out folds; the best (tuned on all queries) is written into the pipeline.
        #[arg(long)]
        tune: bool,
        /// Folds of --tune's cross-validation.
        #[arg(long, default_value_t = 5, value_name = "K")]
        folds: usize,
        /// Seed of --tune's fold assignment.
        #[arg(long, default_value_t = 13)]
        seed: u64,
        /// Where eval.md, eval.json and eval.png go.
        #[arg(long, value_name = "DIR", default_value = ".run/eval")]
        out: PathBuf,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Eval reports of the same queries side by side (stock against fine-tuned, fp32 against
    /// int8): one table and one chart whose rows are `model: mode`.
    Compare {
        /// eval.json files (or the folders holding them), in the order to show.
        #[arg(required = true, value_name = "EVAL_JSON")]
        reports: Vec<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = ".run/eval-compare")]
        out: PathBuf,
    },
    /// Reindex an existing index into a vector index through a pipeline: resumable (checkpoints in
    /// the engine), sliced, backpressured, failures logged in an error index, alias moved at the end.
    Reindex {
        /// A pipeline file, or the name of a pipeline in ingest.pipelines.
        #[arg(long)]
        pipeline: Option<String>,
        /// Default: the pipeline's index.
        #[arg(long)]
        source: Option<String>,
        /// Default: `{source}-{unix time}`; created when missing.
        #[arg(long)]
        target: Option<String>,
        /// Reindex a subset: a query DSL object as JSON.
        #[arg(long, value_name = "JSON")]
        query: Option<String>,
        #[arg(long, default_value_t = 1)]
        slices: u32,
        /// Continue a job from its checkpoints.
        #[arg(long, value_name = "JOB_ID")]
        resume: Option<String>,
        /// Move this alias to the target when done (blue/green).
        #[arg(long)]
        alias: Option<String>,
        /// Documents per read.
        #[arg(long)]
        page_size: Option<usize>,
        /// Largest bulk request; the size adapts below it.
        #[arg(long)]
        bulk_size: Option<usize>,
        /// Comma-separated `_source` includes of the read.
        #[arg(long)]
        source_includes: Option<String>,
        /// Read with scroll instead of a point in time.
        #[arg(long)]
        scroll: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// BERT-whitening.
    Whiten {
        #[command(subcommand)]
        command: WhitenCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Query,
    Passage,
    Raw,
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Create the pipeline's index with the mapping for the detected engine.
    Create {
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
        /// Print the create-index body instead of sending it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the existing index's mapping with what the pipeline needs; exit 1 on differences.
    Check {
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Latency /search (hybrid) adds over the engine queries it issues, at 1 and N clients, and
    /// under a concurrent bulk embedding load. The pipeline's index must hold documents.
    Search {
        #[arg(long, value_name = "FILE")]
        pipeline: PathBuf,
        /// Queries (.jsonl with text, e.g. BEIR queries.jsonl).
        #[arg(long)]
        queries: PathBuf,
        /// Documents for the bulk load (.jsonl with title/text).
        #[arg(long)]
        docs: PathBuf,
        #[arg(long, default_value_t = 200)]
        max_queries: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Query-vector cache entries; 0 (the default) encodes every query, as in the headline figures.
        #[arg(long, default_value_t = 0)]
        query_cache: usize,
    },
    /// Encoder throughput: naive vs grouped batches per model, and concurrent HTTP clients.
    Encode {
        /// Model folders or names; the first also serves the HTTP measurement.
        #[arg(long = "model", required = true)]
        models: Vec<String>,
        /// Documents (.jsonl with title/text, e.g. BEIR corpus.jsonl).
        #[arg(long)]
        docs: PathBuf,
        /// Short texts (.jsonl with text, e.g. BEIR queries.jsonl).
        #[arg(long)]
        queries: PathBuf,
        #[arg(long, default_value_t = 500)]
        max_docs: usize,
        #[arg(long, default_value_t = 1000)]
        max_queries: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
    },
    /// The load generator `bench search` runs in its own process: reads its plan (JSON) from stdin.
    #[command(hide = true)]
    SearchLoad,
    /// The load generator `bench encode` runs in its own process: concurrent clients posting 1–4
    /// texts at a time to an `/embed` URL; prints texts sent, seconds and its own CPU seconds.
    #[command(hide = true)]
    Load {
        #[arg(long)]
        url: String,
        #[arg(long)]
        queries: PathBuf,
        #[arg(long, default_value_t = 1000)]
        max_queries: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
    },
}

#[derive(Subcommand)]
enum WhitenCommand {
    /// Fit the mean and whitening matrix on a sample; writes whitening.json beside the manifest
    /// and adds [whitening] to it.
    Fit {
        /// A model folder (with model.toml) or the name of a model in encoder.models.
        #[arg(long)]
        model: String,
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        #[arg(long, default_value = "text")]
        field: String,
        /// Keep only the strongest K components.
        #[arg(long, value_name = "K")]
        dims: Option<usize>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets redacted).
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut settings = match Settings::load(cli.config.as_deref(), &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(f) = cli.log_format {
        settings.log.format = match f {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Pretty => LogFormat::Pretty,
        };
    }
    match cli.command {
        Command::Config { command: ConfigCommand::Check } => {
            print!("{}", settings.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Embed { model, input, output, field, kind } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let kind = match kind {
                KindArg::Query => TextKind::Query,
                KindArg::Passage => TextKind::Passage,
                KindArg::Raw => TextKind::Raw,
            };
            edge(cli::embed(&settings, &model, &input, &output, &field, kind))
        }
        Command::Index { command } => {
            telemetry::init_tracing(settings.log.format, "warn");
            edge(match command {
                IndexCommand::Create { pipeline, dry_run } => cli::index_create(&settings, &pipeline, dry_run),
                IndexCommand::Check { pipeline } => cli::index_check(&settings, &pipeline),
            })
        }
        Command::Bench {
            command: BenchCommand::Search { pipeline, queries, docs, max_queries, clients, rounds, query_cache },
        } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let o = semantic_sidecar::bench_search::SearchBenchOptions {
                pipeline,
                queries,
                docs,
                max_queries,
                clients,
                rounds,
                query_cache,
            };
            edge(semantic_sidecar::bench_search::bench_search(&settings, &o))
        }
        Command::Bench { command: BenchCommand::SearchLoad } => edge(semantic_sidecar::bench_search::search_load()),
        Command::Bench { command: BenchCommand::Load { url, queries, max_queries, clients } } => {
            edge(semantic_sidecar::bench::bench_load(&url, &queries, max_queries, clients))
        }
        Command::Bench { command: BenchCommand::Encode { models, docs, queries, max_docs, max_queries, clients } } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let o = semantic_sidecar::bench::BenchOptions { models, docs, queries, max_docs, max_queries, clients };
            edge(semantic_sidecar::bench::bench_encode(&settings, &o))
        }
        Command::Eval {
            dataset,
            split,
            modes,
            pipeline,
            model,
            query_model,
            index,
            recreate,
            max_docs,
            tune,
            folds,
            seed,
            out,
            quiet,
        } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let tune = tune.then_some((folds, seed));
            let target = EvalTarget { pipeline, model, query_model, index, recreate };
            edge(run_eval(settings, dataset, split, &modes, target, max_docs, tune, out, quiet))
        }
        Command::Compare { reports, out } => edge(run_compare(&reports, &out)),
        Command::Reindex {
            pipeline,
            source,
            target,
            query,
            slices,
            resume,
            alias,
            page_size,
            bulk_size,
            source_includes,
            scroll,
            quiet,
        } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let query = match query.map(|q| serde_json::from_str::<serde_json::Value>(&q)).transpose() {
                Ok(q) => q,
                Err(e) => {
                    eprintln!("error: --query is not JSON: {e}");
                    return ExitCode::from(2);
                }
            };
            let file = pipeline.as_deref().map(Path::new).filter(|p| p.is_file()).map(Path::to_path_buf);
            let req = semantic_sidecar::reindex::JobRequest {
                pipeline: pipeline.unwrap_or_default(),
                source,
                target,
                query,
                slices,
                alias,
                source_includes: source_includes.map(|s| s.split(',').map(String::from).collect()),
                page_size,
                bulk_size,
                scroll,
                resume,
            };
            match cli::reindex(settings, req, file.as_deref(), quiet) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Whiten { command: WhitenCommand::Fit { model, input, field, dims } } => {
            telemetry::init_tracing(settings.log.format, "warn");
            edge(cli::whiten_fit(&settings, &model, &input, &field, dims))
        }
        Command::Serve { url_file } => {
            telemetry::init_tracing(settings.log.format, &settings.log.level);
            match run_server(settings, url_file.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn edge(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// Which pipeline, model and index an eval runs on.
struct EvalTarget {
    pipeline: PathBuf,
    model: Option<String>,
    query_model: Option<String>,
    index: Option<String>,
    recreate: bool,
}

fn run_compare(reports: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for r in reports {
        let file = if r.is_dir() { r.join("eval.json") } else { r.clone() };
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        all.push(serde_json::from_str(&text).with_context(|| format!("{} is not an eval report", file.display()))?);
    }
    let report = semantic_sidecar::eval::compare(&all)?;
    semantic_sidecar::eval::write_report(&report, out)?;
    println!("{}", report.markdown());
    eprintln!("wrote {0}/eval.md, {0}/eval.json, {0}/eval.png", out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_eval(
    settings: Settings,
    dataset: PathBuf,
    split: String,
    modes: &str,
    target: EvalTarget,
    max_docs: Option<usize>,
    tune: Option<(usize, u64)>,
    out: PathBuf,
    quiet: bool,
) -> anyhow::Result<()> {
    use semantic_sidecar::eval::{self, EvalMode, EvalOptions};
    let modes =
        modes.split(',').filter(|m| !m.trim().is_empty()).map(EvalMode::parse).collect::<anyhow::Result<Vec<_>>>()?;
    let (folds, seed) = tune.unwrap_or((5, 13));
    let opts = EvalOptions {
        dataset,
        split,
        modes,
        pipeline: target.pipeline,
        model: target.model,
        query_model: target.query_model,
        index: target.index,
        recreate: target.recreate,
        max_docs,
        tune: tune.is_some(),
        folds,
        seed,
        out,
        progress: !quiet,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let report = runtime.block_on(eval::run(settings, &opts))?;
    println!("{}", report.markdown());
    if let Some(t) = &report.tuned {
        println!("tuned: {t}");
    }
    eprintln!("wrote {0}/eval.md, {0}/eval.json, {0}/eval.png", opts.out.display());
    Ok(())
}

fn run_server(settings: Settings, url_file: Option<&Path>) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let engine = EngineClient::new(&settings.engine).context("building the engine client")?;
        let addr = settings.server.listen_addr();
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        if let Some(path) = url_file {
            write_atomically(path, &format!("{url}\n")).with_context(|| format!("writing {}", path.display()))?;
        }
        let urls: Vec<&str> = engine.urls().iter().map(|u| u.as_str()).collect();
        tracing::info!(%url, engine = ?urls, version = env!("CARGO_PKG_VERSION"), "listening");
        let keys = &settings.server.api_keys;
        if keys.is_empty() && local.ip().is_loopback() {
            tracing::warn!(%url, "no server.api_keys: serving on loopback only, every caller is admin; set keys to listen elsewhere");
        } else if keys.is_empty() {
            tracing::warn!(%url, "no server.api_keys and server.allow_anonymous = true: anyone who reaches this address is admin");
        } else {
            let names: Vec<String> =
                keys.iter().enumerate().map(|(i, k)| format!("{} ({})", k.name(i), k.scope().as_str())).collect();
            tracing::info!(keys = ?names, "API keys required");
        }
        match engine.probe().await {
            Ok(info) => tracing::info!(flavor = %info.flavor, version = %info.version, "engine reachable"),
            Err(e) => tracing::warn!(error = %e, "engine not reachable yet; /readyz reports 503 until it is"),
        }
        let metrics = Metrics::new();
        let encoder_settings = settings.encoder.clone();
        let encoder_metrics = metrics.encoder.clone();
        let encoders = tokio::task::spawn_blocking(move || EncoderSet::load(&encoder_settings, &encoder_metrics))
            .await
            .context("loading models")?
            .context("loading models")?;
        let pipelines = settings
            .ingest
            .pipelines
            .iter()
            .map(|f| semantic_sidecar::ingest::pipeline::Pipeline::load(f))
            .collect::<Result<Vec<_>, _>>()?;
        let state = AppState::with_encoders(settings, engine, metrics, encoders).with_pipelines(pipelines)?;
        http::serve(listener, state, shutdown_signal()).await.context("serving")?;
        if let Some(path) = url_file {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}
