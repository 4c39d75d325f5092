//! ONNX Runtime: loading the library once per process, building sessions with execution-provider
//! fallback, checking the graph against the manifest, and the session threads.
//!
//! A session lives on its own OS thread for its whole life and is never touched by async code:
//! the thread takes batches from the [`BatchQueue`], pads them, runs the model, pools and
//! normalises, and completes the jobs. Several threads per model may share one queue.
//!
//! Execution providers are tried in the configured order. CUDA is registered with
//! `error_on_failure`, so a missing GPU or CUDA library is an error we see (not ONNX Runtime's
//! silent fallback): its reason is logged and the next provider is tried, unless `require_gpu`
//! is set, which makes it fatal.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ndarray::{Array2, ArrayView2, ArrayView3, Ix2, Ix3};
use ort::environment::Environment;
use ort::ep;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use super::manifest::{Manifest, ModelDir};
use super::pooling::{self, LayerOutputs, Pooled};
use super::queue::{Batch, BatchQueue, JobTimes};
use super::whitening::Whitening;
use super::EncoderError;
use crate::settings::Provider;
use crate::telemetry::EncoderMetrics;

static ORT: OnceLock<Result<(Environment, String), String>> = OnceLock::new();

/// Loads the ONNX Runtime library at `path` (once per process; later calls must name the same file).
pub fn init_runtime(path: &Path) -> Result<Environment, EncoderError> {
    let wanted = path.display().to_string();
    let result = ORT.get_or_init(|| {
        if !path.is_file() {
            return Err(format!("{wanted} does not exist (run scripts/setup, or set encoder.ort_library)"));
        }
        let builder = ort::init_from(path).map_err(|e| format!("loading {wanted}: {e}"))?;
        let env =
            builder.with_name("semantic-sidecar").build().map_err(|e| format!("creating the environment: {e}"))?;
        Ok((env, wanted.clone()))
    });
    match result {
        Ok((env, loaded)) if *loaded == wanted => Ok(env.clone()),
        Ok((_, loaded)) => {
            Err(EncoderError::Runtime(format!("ONNX Runtime is already loaded from {loaded}, not {wanted}")))
        }
        Err(e) => Err(EncoderError::Runtime(e.clone())),
    }
}

/// How sessions are built.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub providers: Vec<Provider>,
    pub require_gpu: bool,
    pub intra_threads: usize,
    pub inter_threads: usize,
    /// Let idle ONNX Runtime threads spin (lower latency on an otherwise idle machine, but they
    /// take CPU from the HTTP server and tokenization).
    pub spinning: bool,
}

/// Builds a session on the first provider that works.
pub fn build_session(
    env: &Environment,
    model: &ModelDir,
    opts: &SessionOptions,
) -> Result<(Session, Provider), EncoderError> {
    let onnx = model.path(&model.manifest.onnx);
    let mut reasons = Vec::new();
    for &provider in &opts.providers {
        let attempt = || -> Result<Session, String> {
            let mut b = Session::builder(env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| e.to_string())?
                .with_intra_threads(opts.intra_threads)
                .map_err(|e| e.to_string())?
                .with_inter_threads(opts.inter_threads)
                .map_err(|e| e.to_string())?
                .with_intra_op_spinning(opts.spinning)
                .map_err(|e| e.to_string())?
                .with_inter_op_spinning(opts.spinning)
                .map_err(|e| e.to_string())?;
            if provider == Provider::Cuda {
                b = b
                    .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| e.to_string())?;
            }
            b.commit_from_file(&onnx).map_err(|e| e.to_string())
        };
        match attempt() {
            Ok(session) => {
                check_graph(&session, &model.manifest)?;
                return Ok((session, provider));
            }
            Err(reason) => {
                tracing::warn!(model = %model.manifest.name, provider = %provider, reason = %reason, "execution provider unavailable");
                if provider == Provider::Cuda && opts.require_gpu {
                    return Err(EncoderError::Runtime(format!(
                        "encoder.require_gpu is set and the CUDA execution provider failed: {reason}"
                    )));
                }
                reasons.push(format!("{provider}: {reason}"));
            }
        }
    }
    Err(EncoderError::Runtime(format!("no execution provider could load {}: {}", onnx.display(), reasons.join("; "))))
}

/// Fails with a message naming the mismatch when the graph does not fit the manifest.
pub fn check_graph(session: &Session, m: &Manifest) -> Result<(), EncoderError> {
    let mismatch = |reason: String| EncoderError::ModelMismatch { model: m.name.clone(), reason };
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    for name in &m.inputs {
        if !inputs.contains(&name.as_str()) {
            return Err(mismatch(format!("manifest input `{name}` is not a graph input (graph inputs: {inputs:?})")));
        }
    }
    if let Some(extra) = inputs.iter().find(|i| !m.inputs.iter().any(|n| n == *i)) {
        return Err(mismatch(format!("graph input `{extra}` is not listed in the manifest's inputs")));
    }
    let outputs = session.outputs();
    for name in m.required_outputs() {
        let Some(outlet) = outputs.iter().find(|o| o.name() == name) else {
            let names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
            return Err(mismatch(format!("output `{name}` is not a graph output (graph outputs: {names:?})")));
        };
        if let Some(shape) = outlet.dtype().tensor_shape() {
            let hidden = shape.last().copied().unwrap_or(-1);
            if hidden > 0 && hidden as usize != m.dims {
                return Err(mismatch(format!(
                    "output `{name}` has hidden size {hidden}, the manifest says dims = {}",
                    m.dims
                )));
            }
        }
    }
    Ok(())
}

/// What a session thread needs besides its session.
pub struct Worker {
    pub manifest: Manifest,
    pub pad_id: i64,
    pub whitening: Option<Arc<Whitening>>,
    pub queue: Arc<BatchQueue>,
    pub metrics: EncoderMetrics,
    /// False for the session reserved for queries: it only takes interactive batches.
    pub accept_bulk: bool,
}

impl Worker {
    /// The session thread's loop: runs until the queue is closed and drained.
    pub fn run(self, mut session: Session) {
        let outputs = self.manifest.required_outputs();
        let mut selector = OutputSelector::no_default();
        for o in &outputs {
            selector = selector.with(o.clone());
        }
        let run_options = match RunOptions::new().map(|r| r.with_outputs(selector)) {
            Ok(r) => r,
            Err(e) => {
                // Without run options this thread cannot serve: stop the queue and fail what
                // waits in it, so no caller hangs.
                tracing::error!(error = %e, "cannot create run options; the model stops serving");
                self.queue.close();
                while let Some(batch) = self.queue.next_batch() {
                    for (job, _) in &batch.items {
                        job.fail(EncoderError::Inference(format!("run options: {e}")));
                    }
                }
                return;
            }
        };
        while let Some(batch) = self.queue.next_batch_for(self.accept_bulk) {
            let (interactive, bulk) = self.queue.depth();
            self.metrics.set_queue_depth(&self.manifest.name, interactive, bulk);
            let live: Vec<_> = batch.items.iter().filter(|(job, _)| !job.is_abandoned()).cloned().collect();
            if live.is_empty() {
                self.queue.finished(batch.lane);
                continue;
            }
            let batch = Batch { lane: batch.lane, items: live };
            let started = std::time::Instant::now();
            for (job, _) in &batch.items {
                self.metrics.observe_queue_wait(&self.manifest.name, batch.lane.as_str(), started - job.submitted);
            }
            let result = self.run_batch(&mut session, &run_options, &batch);
            let ran = started.elapsed();
            // recorded before any caller hears back, so metrics read after a reply include it
            self.metrics.observe_batch(
                &self.manifest.name,
                batch.lane.as_str(),
                batch.items.len(),
                batch.max_len(),
                ran,
            );
            match result {
                Ok(results) => {
                    for ((job, idx), value) in batch.items.iter().zip(results) {
                        job.complete(*idx, value, JobTimes { queue_wait: started - job.submitted, run: ran });
                    }
                }
                Err(e) => {
                    tracing::error!(model = %self.manifest.name, error = %e, "inference failed");
                    for (job, _) in &batch.items {
                        job.fail(e.clone());
                    }
                }
            }
            self.queue.finished(batch.lane);
        }
    }

    fn run_batch(
        &self,
        session: &mut Session,
        opts: &RunOptions<ort::session::HasSelectedOutputs>,
        batch: &Batch,
    ) -> Result<Vec<Pooled>, EncoderError> {
        let n = batch.items.len();
        let width = batch.max_len().max(1);
        let mut ids = Array2::<i64>::from_elem((n, width), self.pad_id);
        let mut mask = Array2::<i64>::zeros((n, width));
        let mut types = Array2::<i64>::zeros((n, width));
        for (row, (job, idx)) in batch.items.iter().enumerate() {
            let s = &job.seqs[*idx];
            for (col, (&id, &ty)) in s.ids.iter().zip(&s.type_ids).enumerate() {
                ids[[row, col]] = id;
                types[[row, col]] = ty;
                mask[[row, col]] = 1;
            }
        }
        let infer = |e: ort::Error| EncoderError::Inference(e.to_string());
        let mut inputs = Vec::with_capacity(3);
        for name in &self.manifest.inputs {
            let array = match name.as_str() {
                "input_ids" => &ids,
                "attention_mask" => &mask,
                _ => &types,
            };
            inputs.push((name.as_str(), TensorRef::from_array_view(array.view()).map_err(infer)?));
        }
        let outputs = session.run_with_options(inputs, opts).map_err(infer)?;
        let o = &self.manifest.outputs;
        let view3 = |name: &Option<String>| -> Result<Option<ArrayView3<'_, f32>>, EncoderError> {
            match name.as_ref().and_then(|n| outputs.get(n)) {
                None => Ok(None),
                Some(v) => {
                    let a = v.try_extract_array::<f32>().map_err(infer)?;
                    Ok(Some(a.into_dimensionality::<Ix3>().map_err(|e| EncoderError::Inference(e.to_string()))?))
                }
            }
        };
        let layers = LayerOutputs {
            last: view3(&Some(o.last_hidden_state.clone()))?,
            first: view3(&o.first_hidden_state)?,
            second_last: view3(&o.second_last_hidden_state)?,
            pooler: match o.pooler_output.as_ref().and_then(|n| outputs.get(n)) {
                None => None,
                Some(v) => Some(
                    v.try_extract_array::<f32>()
                        .map_err(infer)?
                        .into_dimensionality::<Ix2>()
                        .map_err(|e| EncoderError::Inference(e.to_string()))?,
                ),
            },
        };
        let mask_view: ArrayView2<'_, i64> = mask.view();
        (0..n)
            .map(|row| {
                let pooled = pooling::pool(self.manifest.pooling, &layers, mask_view, row)
                    .map_err(|e| EncoderError::Inference(e.to_string()))?;
                Ok(self.finish(pooled))
            })
            .collect()
    }

    /// Whitening, if configured. Normalisation is the caller's choice (per request), so it
    /// happens in `Encoder::encode`.
    fn finish(&self, pooled: Pooled) -> Pooled {
        match (pooled, &self.whitening) {
            (Pooled::Vector(v), Some(w)) => Pooled::Vector(w.apply(&v)),
            (other, _) => other,
        }
    }
}
