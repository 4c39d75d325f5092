//! The batching queue between async callers and the session threads.
//!
//! Two lanes: `Interactive` (query encodes, small API calls) is always drained before `Bulk`
//! (ingest, reindex, large API calls); a batch never mixes lanes, so a query never waits behind
//! a padded batch of long passages. A batch is cut from a window of the oldest pending inputs of
//! a lane (several jobs share batches), sorted longest first, under a token budget
//! (`batch size × longest input ≤ max_batch_tokens`) and a count limit (`max_batch_requests`),
//! and split early where lengths drop below 3/4 of the longest, so short queries are not padded
//! to a long one. A session reserved for queries takes only interactive batches; an idle one
//! takes a lone query at once, as a batch of one (no padding, no waiting for batch mates).
//!
//! Bounded: capacity is counted in inputs with a semaphore. HTTP callers `try_acquire` and get
//! [`EncoderError::QueueFull`] (429) when it is spent; internal bulk callers wait for room.
//!
//! Cancellation: a job whose caller dropped its future (the reply receiver is closed) is removed
//! before any of its remaining inputs reach the model.
//!
//! Threads: `submit` is called from async tasks and never blocks; `next_batch` blocks a session
//! thread on a condition variable. The lock is held only to move indices, never during inference.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::pooling::Pooled;
use super::tokenize::Encoded;
use super::EncoderError;

/// Which lane a job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Interactive,
    Bulk,
}

impl Lane {
    /// The lane's label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Bulk => "bulk",
        }
    }
}

/// Batch limits.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
}

/// Where a job's time went once it was queued: the longest any of its inputs waited for a
/// session, and the longest batch of its inputs took to run (inference, pooling, whitening).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JobTimes {
    pub queue_wait: Duration,
    pub run: Duration,
}

/// What a job's caller gets: the results in input order and where the time went.
pub type JobResult = Result<(Vec<Pooled>, JobTimes), EncoderError>;

/// One caller's inputs and where their results go.
pub struct Job {
    pub seqs: Vec<Encoded>,
    /// When the job was queued (queue wait is measured from here).
    pub submitted: Instant,
    state: Mutex<JobState>,
    _permit: Option<OwnedSemaphorePermit>,
}

struct JobState {
    results: Vec<Option<Pooled>>,
    remaining: usize,
    times: JobTimes,
    reply: Option<oneshot::Sender<JobResult>>,
}

impl Job {
    pub fn new(seqs: Vec<Encoded>, permit: Option<OwnedSemaphorePermit>) -> (Arc<Job>, oneshot::Receiver<JobResult>) {
        let (tx, rx) = oneshot::channel();
        let n = seqs.len();
        let job = Job {
            seqs,
            submitted: Instant::now(),
            state: Mutex::new(JobState {
                results: vec![None; n],
                remaining: n,
                times: JobTimes::default(),
                reply: Some(tx),
            }),
            _permit: permit,
        };
        (Arc::new(job), rx)
    }

    /// True when nobody waits for the result any more.
    pub fn is_abandoned(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reply.as_ref().is_none_or(|r| r.is_closed())
    }

    /// Stores the result of input `index`, whose batch started after it waited `batch.queue_wait`
    /// and ran for `batch.run`; sends the reply when it was the last one.
    pub fn complete(&self, index: usize, value: Pooled, batch: JobTimes) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.times.queue_wait = st.times.queue_wait.max(batch.queue_wait);
        st.times.run = st.times.run.max(batch.run);
        if st.results[index].is_none() {
            st.results[index] = Some(value);
            st.remaining -= 1;
        }
        if st.remaining == 0 {
            if let Some(reply) = st.reply.take() {
                let results =
                    std::mem::take(&mut st.results).into_iter().map(|r| r.expect("all inputs done")).collect();
                let _ = reply.send(Ok((results, st.times)));
            }
        }
    }

    /// Fails the whole job (the first error wins).
    pub fn fail(&self, error: EncoderError) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reply) = st.reply.take() {
            let _ = reply.send(Err(error));
        }
    }
}

/// A job in a lane, with the inputs not yet handed to a session.
struct Pending {
    job: Arc<Job>,
    /// Input indices not yet in a batch, longest first.
    remaining: Vec<usize>,
}

/// One batch: (job, input index) pairs, in the order they go to the model.
pub struct Batch {
    pub lane: Lane,
    pub items: Vec<(Arc<Job>, usize)>,
}

impl Batch {
    pub fn max_len(&self) -> usize {
        self.items.iter().map(|(j, i)| j.seqs[*i].len()).max().unwrap_or(0)
    }
}

struct Lanes {
    interactive: VecDeque<Pending>,
    bulk: VecDeque<Pending>,
    closed: bool,
    /// Bulk batches being run now, and how many may run at once (so a session stays free for
    /// interactive work when there are several).
    bulk_running: usize,
    max_bulk_running: usize,
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            interactive: VecDeque::new(),
            bulk: VecDeque::new(),
            closed: false,
            bulk_running: 0,
            max_bulk_running: usize::MAX,
        }
    }
}

impl Lanes {
    fn lane(&mut self, lane: Lane) -> &mut VecDeque<Pending> {
        match lane {
            Lane::Interactive => &mut self.interactive,
            Lane::Bulk => &mut self.bulk,
        }
    }

    /// Drops abandoned jobs at the front of each lane.
    fn prune(&mut self) {
        for lane in [Lane::Interactive, Lane::Bulk] {
            let q = self.lane(lane);
            q.retain(|p| !p.job.is_abandoned());
        }
    }

    /// Cuts the next batch from the first non-empty lane (interactive first; bulk only for a
    /// session that `accept_bulk`). Pure bookkeeping.
    fn take_batch(&mut self, limits: BatchLimits, accept_bulk: bool) -> Option<Batch> {
        self.prune();
        let lane = if !self.interactive.is_empty() {
            Lane::Interactive
        } else if accept_bulk && !self.bulk.is_empty() && self.bulk_running < self.max_bulk_running {
            Lane::Bulk
        } else {
            return None;
        };
        if lane == Lane::Bulk {
            self.bulk_running += 1;
        }
        let q = self.lane(lane);
        // The window: pending inputs of the oldest jobs, in arrival order, then longest first.
        let window = limits.max_batch_requests.saturating_mul(WINDOW_BATCHES).max(1);
        let mut cand: Vec<(usize, usize, usize)> = Vec::new(); // (job position, input index, length)
        'window: for (pos, p) in q.iter().enumerate() {
            for &idx in &p.remaining {
                if cand.len() >= window {
                    break 'window;
                }
                cand.push((pos, idx, p.job.seqs[idx].len().max(1)));
            }
        }
        cand.sort_by_key(|c| std::cmp::Reverse(c.2));
        let chosen = cut_batch(&cand, limits);
        let mut items = Vec::with_capacity(chosen);
        for &(pos, idx, _) in &cand[..chosen] {
            let p = &mut q[pos];
            p.remaining.retain(|&i| i != idx);
            items.push((p.job.clone(), idx));
        }
        q.retain(|p| !p.remaining.is_empty());
        Some(Batch { lane, items })
    }
}

/// Batches are cut from this many batches' worth of the oldest pending inputs.
const WINDOW_BATCHES: usize = 4;

/// A batch stops growing at an input shorter than three quarters of its longest once it holds
/// this many: a second batch of the short ones wastes less on padding than one padded to the long
/// ones. (Measured on 1,000 SciFact queries from 32 HTTP clients, 1–4 texts each, without
/// spinning threads: splitting at 2/3 from 8 inputs gave 77% of the padded slots to real tokens
/// and 80% of the offline rate; at 3/4 from 4, 85% and 85%; at 5/6 from 4, 88%, but the offline
/// rate itself fell by 12%, the batches being too small.)
const MIN_SPLIT_BATCH: usize = 4;

/// How many of the length-sorted candidates (longest first) go into the next batch: as many as
/// the token budget and request limit allow, split early where lengths drop below 3/4. Pure.
pub fn cut_batch(sorted: &[(usize, usize, usize)], limits: BatchLimits) -> usize {
    let Some(&(_, _, longest)) = sorted.first() else { return 0 };
    let mut n = 0;
    for &(_, _, len) in sorted {
        let fits = n < limits.max_batch_requests && longest * (n + 1) <= limits.max_batch_tokens;
        let split_here = n >= MIN_SPLIT_BATCH && len * 4 < longest * 3;
        if n > 0 && (!fits || split_here) {
            break;
        }
        n += 1;
    }
    n
}

/// The queue shared by the callers and the session threads of one model.
pub struct BatchQueue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    limits: BatchLimits,
}

impl BatchQueue {
    pub fn new(limits: BatchLimits) -> Self {
        BatchQueue { lanes: Mutex::new(Lanes::default()), ready: Condvar::new(), limits }
    }

    /// At most `n` bulk batches run at once (at least 1): with several session threads, the rest
    /// stay free for interactive work, so a query never waits for a bulk batch to finish.
    pub fn with_max_bulk_running(self, n: usize) -> Self {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).max_bulk_running = n.max(1);
        self
    }

    /// A session thread is done with a batch of `lane`.
    pub fn finished(&self, lane: Lane) {
        if lane == Lane::Bulk {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            lanes.bulk_running = lanes.bulk_running.saturating_sub(1);
            drop(lanes);
            self.ready.notify_all();
        }
    }

    /// Queues a job; never blocks.
    pub fn submit(&self, job: Arc<Job>, lane: Lane) -> Result<(), EncoderError> {
        let mut remaining: Vec<usize> = (0..job.seqs.len()).collect();
        remaining.sort_by_key(|&i| std::cmp::Reverse(job.seqs[i].len()));
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if lanes.closed {
            return Err(EncoderError::ShuttingDown);
        }
        lanes.lane(lane).push_back(Pending { job, remaining });
        drop(lanes);
        // every session thread looks: one that takes only interactive work must not swallow
        // the wake-up a bulk job needs (a model has a handful of session threads)
        self.ready.notify_all();
        Ok(())
    }

    /// Blocks until a batch is ready; `None` once the queue is closed and drained.
    pub fn next_batch(&self) -> Option<Batch> {
        self.next_batch_for(true)
    }

    /// Like [`BatchQueue::next_batch`], for a session that takes bulk batches or not (the
    /// session reserved for queries).
    pub fn next_batch_for(&self, accept_bulk: bool) -> Option<Batch> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(batch) = lanes.take_batch(self.limits, accept_bulk) {
                if batch.items.is_empty() {
                    continue;
                }
                // More work left: wake the other session threads.
                if !lanes.interactive.is_empty()
                    || (!lanes.bulk.is_empty() && lanes.bulk_running < lanes.max_bulk_running)
                {
                    self.ready.notify_all();
                }
                return Some(batch);
            }
            if lanes.closed {
                return None;
            }
            lanes = self.ready.wait(lanes).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Inputs waiting in each lane (not yet in a batch), for metrics.
    pub fn depth(&self) -> (usize, usize) {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let count = |q: &VecDeque<Pending>| q.iter().map(|p| p.remaining.len()).sum();
        (count(&lanes.interactive), count(&lanes.bulk))
    }

    /// Stops the session threads once the queued work is done; new submissions fail.
    pub fn close(&self) {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(len: usize) -> Encoded {
        Encoded { ids: vec![1; len], type_ids: vec![0; len], truncated: 0 }
    }

    fn job(lens: &[usize]) -> (Arc<Job>, oneshot::Receiver<JobResult>) {
        Job::new(lens.iter().map(|&n| seq(n)).collect(), None)
    }

    fn limits(tokens: usize, requests: usize) -> BatchLimits {
        BatchLimits { max_batch_tokens: tokens, max_batch_requests: requests }
    }

    fn lens(b: &Batch) -> Vec<usize> {
        b.items.iter().map(|(j, i)| j.seqs[*i].len()).collect()
    }

    #[test]
    fn batches_respect_the_token_budget_and_go_longest_first() {
        let q = BatchQueue::new(limits(100, 64));
        let (j, _rx) = job(&[10, 40, 20, 30, 5, 50]);
        q.submit(j, Lane::Bulk).unwrap();
        let mut seen = Vec::new();
        while q.depth() != (0, 0) {
            let b = q.next_batch().unwrap();
            assert!(b.max_len() * b.items.len() <= 100, "{:?}", lens(&b));
            seen.push(lens(&b));
        }
        assert_eq!(seen, vec![vec![50, 40], vec![30, 20, 10], vec![5]]);
    }

    #[test]
    fn a_single_input_over_the_budget_still_runs_alone() {
        let q = BatchQueue::new(limits(16, 64));
        let (j, _rx) = job(&[64, 3]);
        q.submit(j, Lane::Bulk).unwrap();
        assert_eq!(lens(&q.next_batch().unwrap()), vec![64]);
        assert_eq!(lens(&q.next_batch().unwrap()), vec![3]);
    }

    #[test]
    fn the_request_count_limits_a_batch() {
        let q = BatchQueue::new(limits(10_000, 3));
        let (j, _rx) = job(&[2; 7]);
        q.submit(j, Lane::Bulk).unwrap();
        assert_eq!(q.next_batch().unwrap().items.len(), 3);
        assert_eq!(q.next_batch().unwrap().items.len(), 3);
        assert_eq!(q.next_batch().unwrap().items.len(), 1);
    }

    #[test]
    fn the_interactive_lane_overtakes_bulk_and_lanes_never_mix() {
        let q = BatchQueue::new(limits(1000, 4));
        let (bulk, _b) = job(&[100; 8]);
        q.submit(bulk, Lane::Bulk).unwrap();
        let first = q.next_batch().unwrap();
        assert_eq!(first.lane, Lane::Bulk);
        let (query, _q) = job(&[7, 9]);
        q.submit(query, Lane::Interactive).unwrap();
        let next = q.next_batch().unwrap();
        assert_eq!(next.lane, Lane::Interactive, "the query goes before the rest of the bulk job");
        assert_eq!(lens(&next), vec![9, 7]);
        assert_eq!(q.next_batch().unwrap().lane, Lane::Bulk);
    }

    #[test]
    fn jobs_of_one_lane_share_batches() {
        let q = BatchQueue::new(limits(1000, 8));
        let (a, _ra) = job(&[5, 5]);
        let (b, _rb) = job(&[6]);
        q.submit(a, Lane::Interactive).unwrap();
        q.submit(b, Lane::Interactive).unwrap();
        assert_eq!(lens(&q.next_batch().unwrap()), vec![6, 5, 5], "longest first across jobs");
    }

    #[test]
    fn short_inputs_of_many_jobs_are_grouped_apart_from_long_ones() {
        let q = BatchQueue::new(limits(100_000, 64));
        let mut rxs = Vec::new();
        for i in 0..20 {
            let (j, rx) = job(&[if i % 2 == 0 { 60 } else { 10 }]);
            rxs.push(rx);
            q.submit(j, Lane::Interactive).unwrap();
        }
        assert_eq!(lens(&q.next_batch().unwrap()), vec![60; 10]);
        assert_eq!(lens(&q.next_batch().unwrap()), vec![10; 10]);
        assert_eq!(q.depth(), (0, 0));
    }

    #[test]
    fn small_batches_are_not_split() {
        let sorted: Vec<(usize, usize, usize)> = [60, 50, 10].iter().map(|&l| (0, 0, l)).collect();
        assert_eq!(cut_batch(&sorted, limits(10_000, 64)), 3, "fewer than MIN_SPLIT_BATCH stay together");
        let sorted: Vec<(usize, usize, usize)> = [60, 50, 46, 45, 45, 30].iter().map(|&l| (0, 0, l)).collect();
        assert_eq!(cut_batch(&sorted, limits(10_000, 64)), 5, "split where lengths drop below 3/4");
        assert_eq!(cut_batch(&[], limits(100, 4)), 0);
    }

    #[test]
    fn bulk_batches_are_capped_so_a_session_stays_free_for_queries() {
        let q = BatchQueue::new(limits(4, 1)).with_max_bulk_running(1);
        let (b1, _r1) = job(&[3]);
        let (b2, _r2) = job(&[3]);
        q.submit(b1, Lane::Bulk).unwrap();
        q.submit(b2, Lane::Bulk).unwrap();
        let first = q.next_batch().unwrap();
        assert_eq!(first.lane, Lane::Bulk);
        // one bulk batch runs: the next free session gets only interactive work
        let (i, _ri) = job(&[2]);
        q.submit(i, Lane::Interactive).unwrap();
        assert_eq!(q.next_batch().unwrap().lane, Lane::Interactive);
        assert_eq!(q.depth(), (0, 1), "the second bulk job waits");
        q.finished(Lane::Bulk);
        assert_eq!(q.next_batch().unwrap().lane, Lane::Bulk);
    }

    #[test]
    fn a_session_that_takes_no_bulk_work_leaves_it_for_the_others() {
        let q = Arc::new(BatchQueue::new(limits(100, 4)));
        let (b, _rb) = job(&[3]);
        q.submit(b, Lane::Bulk).unwrap();
        let (i, _ri) = job(&[2]);
        q.submit(i, Lane::Interactive).unwrap();
        assert_eq!(q.next_batch_for(false).unwrap().lane, Lane::Interactive);
        // the interactive-only thread waits; a bulk-capable one takes the bulk job
        let q2 = q.clone();
        let waiting = std::thread::spawn(move || q2.next_batch_for(false).map(|b| b.lane));
        assert_eq!(q.next_batch_for(true).unwrap().lane, Lane::Bulk);
        let (i2, _ri2) = job(&[2]);
        q.submit(i2, Lane::Interactive).unwrap();
        assert_eq!(waiting.join().unwrap(), Some(Lane::Interactive));
    }

    #[test]
    fn abandoned_jobs_are_skipped_before_inference() {
        let q = BatchQueue::new(limits(1000, 8));
        let (gone, rx) = job(&[5, 5, 5]);
        drop(rx);
        let (kept, _rk) = job(&[4]);
        q.submit(gone, Lane::Interactive).unwrap();
        q.submit(kept, Lane::Interactive).unwrap();
        assert_eq!(lens(&q.next_batch().unwrap()), vec![4]);
        assert_eq!(q.depth(), (0, 0));
    }

    #[test]
    fn a_job_replies_once_every_input_is_done_in_input_order() {
        let (j, mut rx) = job(&[3, 1, 2]);
        let ms = Duration::from_millis;
        let first = JobTimes { queue_wait: ms(1), run: ms(30) };
        j.complete(2, Pooled::Vector(vec![2.0]), first);
        j.complete(0, Pooled::Vector(vec![0.0]), first);
        assert!(rx.try_recv().is_err(), "not yet");
        j.complete(1, Pooled::Vector(vec![1.0]), JobTimes { queue_wait: ms(31), run: ms(5) });
        let (out, times) = rx.try_recv().unwrap().unwrap();
        assert_eq!(out, vec![Pooled::Vector(vec![0.0]), Pooled::Vector(vec![1.0]), Pooled::Vector(vec![2.0])]);
        assert_eq!(times, JobTimes { queue_wait: ms(31), run: ms(30) }, "the longest wait and the longest batch");
    }

    #[test]
    fn a_second_session_thread_is_woken_while_work_remains() {
        let q = Arc::new(BatchQueue::new(limits(10, 64)));
        let started = Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (q, started) = (q.clone(), started.clone());
                std::thread::spawn(move || {
                    started.wait();
                    let b = q.next_batch().unwrap();
                    b.items.len()
                })
            })
            .collect();
        started.wait();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (j, _rx) = job(&[10, 10]);
        q.submit(j, Lane::Bulk).unwrap(); // one notify; two batches of one input each
        let got: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(got, vec![1, 1], "both threads got a batch");
    }

    #[test]
    fn closing_wakes_waiting_threads_and_refuses_new_jobs() {
        let q = Arc::new(BatchQueue::new(limits(100, 4)));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.next_batch().is_none());
        std::thread::sleep(std::time::Duration::from_millis(50));
        q.close();
        assert!(t.join().unwrap());
        let (j, _rx) = job(&[1]);
        assert!(matches!(q.submit(j, Lane::Bulk), Err(EncoderError::ShuttingDown)));
    }
}
