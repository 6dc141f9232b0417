//! A memory budget for the nodes of one process (`repflow run --max-memory`): a node starts
//! when its estimated working memory ([`crate::Kind::memory`]), the estimates of the nodes
//! already running, and what the run's caches hold ([`Evict`]) fit under the limit. To make
//! room, caches are evicted first (least recently used first); a node that still does not
//! fit waits for running nodes to finish; a node whose estimate alone exceeds the limit
//! fails with an error that says so, and the rest of the run goes on.
//!
//! Estimates are the node kinds' own; a kind that gives none (0) always fits. The budget
//! bounds what it is told about: it is a scheduler's admission rule, not an allocator limit.

use std::sync::{Arc, Condvar, Mutex};

/// Memory a run's context holds between nodes (caches) and can give back.
pub trait Evict: Send + Sync {
    /// Bytes held now.
    fn held_bytes(&self) -> u64;
    /// Drops cached items, least recently used first, until at most `bytes` are held (or
    /// nothing evictable is left).
    fn evict_to(&self, bytes: u64);
}

/// The limit, what running nodes have reserved, and the caches to evict from.
pub struct MemoryBudget {
    limit: u64,
    reserved: Mutex<u64>,
    freed: Condvar,
    caches: Arc<dyn Evict>,
}

/// Memory reserved for one running node; given back when dropped.
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes over the nodes of this process and `caches`.
    pub fn new(limit: u64, caches: Arc<dyn Evict>) -> Self {
        MemoryBudget {
            limit,
            reserved: Mutex::new(0),
            freed: Condvar::new(),
            caches,
        }
    }

    /// The budget's limit, bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Waits until `bytes` fit (evicting caches to make room) and reserves them; an error
    /// when `bytes` alone exceed the limit.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, String> {
        if bytes > self.limit {
            return Err(format!(
                "this node needs about {} of working memory, more than --max-memory {}; \
                 raise --max-memory to at least {} (or leave it out) to run it",
                human(bytes),
                human(self.limit),
                human(bytes)
            ));
        }
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *reserved + bytes <= self.limit {
                let free = self.limit - *reserved - bytes;
                if self.caches.held_bytes() > free {
                    self.caches.evict_to(free);
                }
                // with nothing else running, start anyway: what is still cached is in no
                // one's use, and waiting would free nothing
                if *reserved == 0 || self.caches.held_bytes() <= free {
                    *reserved += bytes;
                    return Ok(Reservation {
                        budget: self,
                        bytes,
                    });
                }
            }
            reserved = self.freed.wait(reserved).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reserved = self
            .budget
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *reserved -= self.bytes;
        self.budget.freed.notify_all();
    }
}

/// `bytes` in the largest binary unit that keeps a whole number part (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Parses a size: a number with an optional unit (`K`, `M`, `G`, `T`, powers of 1,024;
/// `KB`/`KiB` and the like are accepted too), e.g. `8G`, `512MiB`, `1.5G`, `1000000`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}` is not a size: use a number with K, M, G or T (e.g. 8G)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: use a number with K, M, G or T (e.g. 8G)"))?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!(
            "`{text}` is not a usable memory budget: give at least 1 byte (e.g. 8G)"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A cache holding `held` bytes that can give all of it back.
    struct Cache(AtomicU64);

    impl Evict for Cache {
        fn held_bytes(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn evict_to(&self, bytes: u64) {
            let now = self.0.load(Ordering::SeqCst);
            self.0.store(now.min(bytes), Ordering::SeqCst);
        }
    }

    #[test]
    fn sizes_parse_with_units_and_bad_ones_say_how() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size(" 2 KB "), Ok(2048));
        for bad in ["", "G", "8X", "-1G", "0", "1e400", "NaNG", "..G"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains("8G"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_node_larger_than_the_limit_is_refused_with_the_fix() {
        let budget = MemoryBudget::new(1 << 30, Arc::new(Cache(AtomicU64::new(0))));
        let e = budget.reserve(3 << 30).err().expect("refused");
        assert!(
            e.contains("3.0 GiB") && e.contains("--max-memory 1.0 GiB"),
            "{e}"
        );
        assert!(budget.reserve(1 << 30).is_ok(), "exactly the limit fits");
    }

    #[test]
    fn caches_are_evicted_before_a_node_waits() {
        let cache = Arc::new(Cache(AtomicU64::new(900)));
        let budget = MemoryBudget::new(1000, cache.clone());
        let a = budget.reserve(300).expect("fits after eviction");
        assert_eq!(cache.held_bytes(), 700);
        let b = budget.reserve(500).expect("fits after eviction");
        assert_eq!(cache.held_bytes(), 200);
        drop((a, b));
    }

    /// Reservations never add up past the limit, whatever the threads' order; a waiting
    /// node starts when a running one ends.
    #[test]
    fn running_reservations_stay_under_the_limit() {
        let budget = Arc::new(MemoryBudget::new(1000, Arc::new(Cache(AtomicU64::new(0)))));
        let (now, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (budget, now, peak) = (budget.clone(), now.clone(), peak.clone());
                std::thread::spawn(move || {
                    let bytes = 200 + 100 * (i % 4);
                    let _r = budget.reserve(bytes).expect("fits alone");
                    let total = now.fetch_add(bytes, Ordering::SeqCst) + bytes;
                    peak.fetch_max(total, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.fetch_sub(bytes, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 1000, "peak {peak}");
    }
}
