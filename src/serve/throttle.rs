//! Log lines that a misbehaving peer could otherwise repeat at will: at
//! most one per reason per interval, saying how many were left out. The
//! metrics keep the exact counts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interval the servers use for warnings about their peers.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Which reasons were logged when, and how many lines were left out since.
pub struct Throttle {
    every: Duration,
    /// A handful of fixed reasons: a list is quicker than a map.
    seen: Mutex<Vec<Seen>>,
}

struct Seen {
    reason: &'static str,
    logged: Instant,
    left_out: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Whether a line for `reason` may be written now and, if so, how many
    /// for it were left out since the last one.
    pub fn admit(&self, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(entry) = seen.iter_mut().find(|s| s.reason == reason) else {
            seen.push(Seen {
                reason,
                logged: now,
                left_out: 0,
            });
            return Some(0);
        };
        if now.duration_since(entry.logged) < self.every {
            entry.left_out += 1;
            return None;
        }
        entry.logged = now;
        Some(std::mem::take(&mut entry.left_out))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(WARN_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_counting_those_left_out() {
        let throttle = Throttle::new(Duration::from_millis(200));
        assert_eq!(throttle.admit("slow"), Some(0));
        assert_eq!(throttle.admit("garbage"), Some(0), "reasons are limited apart");
        for _ in 0..5 {
            assert_eq!(throttle.admit("slow"), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(throttle.admit("slow"), Some(5));
        assert_eq!(throttle.admit("slow"), None);
        assert_eq!(throttle.admit("garbage"), Some(0));
    }
}
