//! The `semantic-sidecar` binary: command-line parsing and process edges (`anyhow` lives here).
//! It turns flags into the options of a `commands::*` function and an exit code; the work itself
//! must stay in the library, where tests reach it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use semantic_sidecar::commands::{self, bench, eval};
use semantic_sidecar::encoder::TextKind;
use semantic_sidecar::settings::{LogFormat, Settings};
use semantic_sidecar::telemetry;

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
    Eval(EvalArgs),
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
    Reindex(ReindexArgs),
    /// The cluster's pipelines: put, get, list, delete (through a sidecar with --sidecar, else
    /// directly on the configured cluster).
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
        /// A running sidecar's URL: use its admin API (`/_sidecar/pipeline`).
        #[arg(long, global = true, value_name = "URL")]
        sidecar: Option<String>,
        /// The sidecar's admin key (sent as x-api-key).
        #[arg(long, global = true, env = "SIDECAR_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// BERT-whitening.
    Whiten {
        #[command(subcommand)]
        command: WhitenCommand,
    },
}

#[derive(Args)]
struct EvalArgs {
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
}

#[derive(Args)]
struct ReindexArgs {
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
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Query,
    Passage,
    Raw,
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Store a pipeline (a .toml file like pipelines/*.toml, or its JSON form).
    Put {
        file: PathBuf,
        /// Only over this version (from `get`): with --if-primary-term; a newer one fails (409).
        #[arg(long, requires = "if_primary_term")]
        if_seq_no: Option<u64>,
        #[arg(long, requires = "if_seq_no")]
        if_primary_term: Option<u64>,
    },
    /// One pipeline: definition, version, index, documents without vectors.
    Get { name: String },
    /// Every pipeline.
    List,
    /// Delete a pipeline (its index and vectors stay).
    Delete {
        name: String,
        #[arg(long, requires = "if_primary_term")]
        if_seq_no: Option<u64>,
        #[arg(long, requires = "if_seq_no")]
        if_primary_term: Option<u64>,
    },
}

/// `pipeline put|get|list|delete`, through a sidecar or on the cluster.
fn pipeline(
    settings: Settings,
    command: PipelineCommand,
    sidecar: Option<String>,
    api_key: Option<String>,
) -> anyhow::Result<()> {
    use commands::pipeline::Op;
    telemetry::init_tracing(settings.log.format, "warn");
    let op = match command {
        PipelineCommand::Put { file, if_seq_no, if_primary_term } => {
            Op::Put { file, version: if_seq_no.zip(if_primary_term) }
        }
        PipelineCommand::Get { name } => Op::Get { name },
        PipelineCommand::List => Op::List,
        PipelineCommand::Delete { name, if_seq_no, if_primary_term } => {
            Op::Delete { name, version: if_seq_no.zip(if_primary_term) }
        }
    };
    commands::pipeline::run(settings, op, commands::pipeline::Via { sidecar, api_key })
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
    let Some(settings) = settings_of(&cli) else {
        return ExitCode::from(2);
    };
    match cli.command {
        Command::Config { command: ConfigCommand::Check } => {
            commands::config::check(&settings);
            ExitCode::SUCCESS
        }
        Command::Embed { model, input, output, field, kind } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let kind = match kind {
                KindArg::Query => TextKind::Query,
                KindArg::Passage => TextKind::Passage,
                KindArg::Raw => TextKind::Raw,
            };
            edge(commands::embed::embed(&settings, &model, &input, &output, &field, kind))
        }
        Command::Index { command } => {
            telemetry::init_tracing(settings.log.format, "warn");
            edge(match command {
                IndexCommand::Create { pipeline, dry_run } => {
                    commands::index::index_create(&settings, &pipeline, dry_run)
                }
                IndexCommand::Check { pipeline } => commands::index::index_check(&settings, &pipeline),
            })
        }
        Command::Pipeline { command, sidecar, api_key } => edge(pipeline(settings, command, sidecar, api_key)),
        Command::Bench {
            command: BenchCommand::Search { pipeline, queries, docs, max_queries, clients, rounds, query_cache },
        } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let o = bench::search::SearchBenchOptions {
                pipeline,
                queries,
                docs,
                max_queries,
                clients,
                rounds,
                query_cache,
            };
            edge(bench::search::bench_search(&settings, &o))
        }
        Command::Bench { command: BenchCommand::SearchLoad } => edge(bench::search::search_load()),
        Command::Bench { command: BenchCommand::Load { url, queries, max_queries, clients } } => {
            edge(bench::bench_load(&url, &queries, max_queries, clients))
        }
        Command::Bench { command: BenchCommand::Encode { models, docs, queries, max_docs, max_queries, clients } } => {
            telemetry::init_tracing(settings.log.format, "warn");
            let o = bench::BenchOptions { models, docs, queries, max_docs, max_queries, clients };
            edge(bench::bench_encode(&settings, &o))
        }
        Command::Eval(args) => {
            telemetry::init_tracing(settings.log.format, "warn");
            edge(run_eval(settings, args))
        }
        Command::Compare { reports, out } => edge(eval::compare_files(&reports, &out)),
        Command::Reindex(args) => {
            telemetry::init_tracing(settings.log.format, "warn");
            run_reindex(settings, args)
        }
        Command::Whiten { command: WhitenCommand::Fit { model, input, field, dims } } => {
            telemetry::init_tracing(settings.log.format, "warn");
            edge(commands::whiten::whiten_fit(&settings, &model, &input, &field, dims))
        }
        Command::Serve { url_file } => {
            telemetry::init_tracing(settings.log.format, &settings.log.level);
            match commands::serve::run(settings, url_file.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The settings from `--config` and the environment, with `--log-format` applied; `None` (the
/// error printed) when they do not load.
fn settings_of(cli: &Cli) -> Option<Settings> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut settings = match Settings::load(cli.config.as_deref(), &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    if let Some(f) = cli.log_format {
        settings.log.format = match f {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Pretty => LogFormat::Pretty,
        };
    }
    Some(settings)
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

/// `eval`: the flags as [`EvalOptions`]; prints the table (and what `--tune` wrote).
fn run_eval(settings: Settings, a: EvalArgs) -> anyhow::Result<()> {
    use semantic_sidecar::commands::eval::{EvalMode, EvalOptions};
    let modes =
        a.modes.split(',').filter(|m| !m.trim().is_empty()).map(EvalMode::parse).collect::<anyhow::Result<Vec<_>>>()?;
    let opts = EvalOptions {
        dataset: a.dataset,
        split: a.split,
        modes,
        pipeline: a.pipeline,
        model: a.model,
        query_model: a.query_model,
        index: a.index,
        recreate: a.recreate,
        max_docs: a.max_docs,
        tune: a.tune,
        // without --tune the folds and seed are unused; the defaults keep the report the same
        folds: if a.tune { a.folds } else { 5 },
        seed: if a.tune { a.seed } else { 13 },
        out: a.out,
        progress: !a.quiet,
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

/// `reindex`: the flags as a job request; exit 0 done, 1 failed, 2 bad flags, 130 cancelled.
fn run_reindex(settings: Settings, args: ReindexArgs) -> ExitCode {
    let ReindexArgs {
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
    } = args;
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
        definition: None,
    };
    match commands::reindex::reindex(settings, req, file.as_deref(), quiet) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
