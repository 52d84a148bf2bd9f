//! Compiled programs kept in memory, by sha256, for the attempts that need them next.
//!
//! Bounded: when a new program comes and the map is full, the least recently used one is
//! dropped. An attempt holds its own reference (`Arc`) to its program from the moment it is
//! queued until its run ends, so dropping one here never affects an attempt; a program needed
//! again is read from the disk cache (`<data_dir>/programs/`, unbounded, see `runner`) or asked
//! for, and compiled again (usually a hit in the sandbox's own cache of compiled modules).

use hashlink::LruCache;
use std::sync::Arc;

/// Compiled programs a worker keeps in memory: as many as the sandbox keeps compiled modules.
pub const PROGRAMS_IN_MEMORY: usize = runegrid_sandbox::CACHE_CAPACITY;

/// At most `capacity` compiled programs, least recently used dropped first.
pub(crate) struct Programs<P = runegrid_sandbox::Program> {
    cache: LruCache<String, Arc<P>>,
}

impl<P> Programs<P> {
    /// An empty map holding at most `capacity` programs (at least one).
    pub(crate) fn new(capacity: usize) -> Programs<P> {
        Programs {
            cache: LruCache::new(capacity.max(1)),
        }
    }

    /// The program, counted as used now.
    pub(crate) fn get(&mut self, sha256: &str) -> Option<Arc<P>> {
        self.cache.get(sha256).cloned()
    }

    /// Whether the program is here (not counted as a use).
    pub(crate) fn contains(&self, sha256: &str) -> bool {
        self.cache.contains_key(sha256)
    }

    /// Keeps a program, dropping the least recently used one when the map is full.
    pub(crate) fn insert(&mut self, sha256: String, program: Arc<P>) {
        if !self.cache.contains_key(&sha256)
            && self.cache.len() >= self.cache.capacity()
            && let Some((dropped, _)) = self.cache.remove_lru()
        {
            tracing::debug!(program = %dropped, "compiled program dropped from memory");
        }
        self.cache.insert(sha256, program);
    }

    /// Programs held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Programs;
    use std::sync::Arc;

    #[test]
    fn holds_at_most_its_capacity_dropping_the_least_recently_used() {
        let mut programs = Programs::<String>::new(2);
        programs.insert("a".into(), Arc::new("A".into()));
        programs.insert("b".into(), Arc::new("B".into()));
        // `a` is used, so `b` is now the least recently used.
        assert_eq!(programs.get("a").as_deref().map(String::as_str), Some("A"));
        programs.insert("c".into(), Arc::new("C".into()));
        assert_eq!(programs.len(), 2);
        assert!(programs.contains("a") && programs.contains("c"));
        assert!(!programs.contains("b"));
        assert!(programs.get("b").is_none());
        // Asking whether one is there does not count as a use: `a` goes next.
        assert!(programs.contains("a"));
        programs.get("c");
        programs.insert("d".into(), Arc::new("D".into()));
        assert!(!programs.contains("a"));
        assert_eq!(programs.len(), 2);
        // Inserting one that is there replaces it and drops nothing.
        programs.insert("d".into(), Arc::new("D2".into()));
        assert_eq!(programs.len(), 2);
        assert!(programs.contains("c"));
        assert_eq!(programs.get("d").as_deref().map(String::as_str), Some("D2"));
    }

    #[test]
    fn a_dropped_program_lives_on_in_the_attempt_that_holds_it() {
        let mut programs = Programs::<String>::new(1);
        programs.insert("a".into(), Arc::new("A".into()));
        // An attempt queued or running holds its program.
        let running = programs.get("a").unwrap();
        programs.insert("b".into(), Arc::new("B".into()));
        assert!(!programs.contains("a"));
        // Only the map's reference went: the attempt's is intact.
        assert_eq!(Arc::strong_count(&running), 1);
        assert_eq!(*running, "A");
    }

    #[test]
    fn capacity_is_at_least_one() {
        let mut programs = Programs::<u8>::new(0);
        programs.insert("a".into(), Arc::new(1));
        assert!(programs.contains("a"));
        assert_eq!(programs.len(), 1);
    }
}
