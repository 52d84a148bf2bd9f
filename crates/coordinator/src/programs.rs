//! Programs as workers receive them (metered modules), and the cache of recently submitted
//! ones, so a submission does not read its module back from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A program's metered module, as workers receive it.
pub struct ProgramBytes {
    pub sha256: String,
    pub module: Vec<u8>,
}

/// Programs kept in the submission cache.
const PROGRAM_CACHE: usize = 64;

/// Recently used programs by upload hash (its own lock, outside the grid's).
#[derive(Default)]
pub struct ProgramCache(Mutex<HashMap<String, Arc<ProgramBytes>>>);

impl ProgramCache {
    pub fn get(&self, sha256: &str) -> Option<Arc<ProgramBytes>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sha256)
            .cloned()
    }

    pub fn insert(&self, sha256: &str, p: Arc<ProgramBytes>) {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= PROGRAM_CACHE
            && !cache.contains_key(sha256)
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
        cache.insert(sha256.to_string(), p);
    }
}
