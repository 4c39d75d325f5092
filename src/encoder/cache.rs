//! The query-vector cache: a bounded least-recently-used map from (model, prefix, text) to the
//! vector the model made for it, so that a query text asked again does not run the model again.
//!
//! One cache is shared by every model of an [`super::EncoderSet`]; the key holds the model's
//! identity (name, ONNX file, output size) and the prefix the text was encoded with, so a vector is
//! never handed to another model or to the same text with another prefix. What is stored is the
//! vector before normalisation (normalisation is per request), after whitening (which is the
//! model's). Only short texts are kept (queries, not passages), so memory stays under
//! `capacity × (MAX_CACHED_TEXT + 4 × dims)` bytes plus bookkeeping.
//!
//! Pure bookkeeping under one mutex, held only to look up or insert; never during inference.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::Pooled;

/// Texts longer than this many bytes are not cached.
pub const MAX_CACHED_TEXT: usize = 1024;

/// What identifies a cached vector.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CacheKey {
    /// The model's identity (see [`super::Encoder`]): name, ONNX file and output size.
    pub model: Arc<str>,
    pub prefix: Arc<str>,
    pub text: String,
}

/// A cached result: the vector and its token accounting.
#[derive(Clone, Debug, PartialEq)]
pub struct Cached {
    pub vector: Pooled,
    pub tokens: usize,
    pub truncated: usize,
}

struct Lru {
    map: HashMap<CacheKey, (Cached, u64)>,
    /// Last-use tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
}

/// A bounded LRU map of query vectors. Cheap to share behind an `Arc`.
pub struct VectorCache {
    inner: Mutex<Lru>,
    capacity: usize,
}

impl VectorCache {
    /// A cache of at most `capacity` vectors (at least 1).
    pub fn new(capacity: usize) -> Self {
        VectorCache {
            inner: Mutex::new(Lru { map: HashMap::new(), order: BTreeMap::new(), tick: 0 }),
            capacity: capacity.max(1),
        }
    }

    /// The vector stored for `key`, which becomes the most recently used.
    pub fn get(&self, key: &CacheKey) -> Option<Cached> {
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        let (value, old) = {
            let (value, used) = lru.map.get_mut(key)?;
            let old = std::mem::replace(used, tick);
            (value.clone(), old)
        };
        if let Some(k) = lru.order.remove(&old) {
            lru.order.insert(tick, k);
        }
        Some(value)
    }

    /// Stores `value` for `key` (texts over [`MAX_CACHED_TEXT`] bytes are skipped), dropping the
    /// least recently used entries past the capacity. Returns the number of entries held.
    pub fn insert(&self, key: CacheKey, value: Cached) -> usize {
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if key.text.len() > MAX_CACHED_TEXT {
            return lru.map.len();
        }
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((_, old)) = lru.map.insert(key.clone(), (value, tick)) {
            lru.order.remove(&old);
        }
        lru.order.insert(tick, key);
        while lru.map.len() > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else { break };
            lru.map.remove(&oldest);
        }
        lru.map.len()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str, prefix: &str, text: &str) -> CacheKey {
        CacheKey { model: model.into(), prefix: prefix.into(), text: text.into() }
    }

    fn val(x: f32) -> Cached {
        Cached { vector: Pooled::Vector(vec![x]), tokens: 3, truncated: 0 }
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let c = VectorCache::new(2);
        c.insert(key("m", "", "a"), val(1.0));
        c.insert(key("m", "", "b"), val(2.0));
        assert_eq!(c.get(&key("m", "", "a")), Some(val(1.0)), "a is now the most recent");
        assert_eq!(c.insert(key("m", "", "c"), val(3.0)), 2);
        assert_eq!(c.get(&key("m", "", "b")), None, "b was the least recently used");
        assert_eq!(c.get(&key("m", "", "a")), Some(val(1.0)));
        assert_eq!(c.get(&key("m", "", "c")), Some(val(3.0)));
    }

    #[test]
    fn model_and_prefix_are_part_of_the_key() {
        let c = VectorCache::new(10);
        c.insert(key("m1", "query: ", "x"), val(1.0));
        assert_eq!(c.get(&key("m2", "query: ", "x")), None, "another model");
        assert_eq!(c.get(&key("m1", "passage: ", "x")), None, "another prefix");
        assert_eq!(c.get(&key("m1", "", "x")), None, "no prefix");
        assert_eq!(c.get(&key("m1", "query: ", "x")), Some(val(1.0)));
    }

    #[test]
    fn replacing_an_entry_keeps_one_copy_and_long_texts_are_skipped() {
        let c = VectorCache::new(10);
        c.insert(key("m", "", "a"), val(1.0));
        c.insert(key("m", "", "a"), val(2.0));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&key("m", "", "a")), Some(val(2.0)));
        let long = "x".repeat(MAX_CACHED_TEXT + 1);
        c.insert(key("m", "", &long), val(3.0));
        assert_eq!(c.get(&key("m", "", &long)), None);
        assert_eq!(c.len(), 1);
        for i in 0..100 {
            c.insert(key("m", "", &i.to_string()), val(i as f32));
        }
        assert_eq!(c.len(), 10, "bounded");
    }
}
