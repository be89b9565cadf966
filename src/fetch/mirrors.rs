//! Which of a file's URLs (its own and its mirrors') are still in use, and which one the next
//! connection takes.
//!
//! Connections are spread over the live URLs: a new one goes to the URL with the fewest
//! connections (the file's own URL first on a tie), so ranges go round-robin and a URL that
//! frees its connections quickly gets more of them. A URL is dropped for the rest of the file
//! when it fails for good (a terminal status, or transient errors again and again), when it
//! serves a different size or validator than the URL whose probe the file follows, or when it
//! is much slower than the best one; its ranges go on from where they stopped on the others.
//! The file fails only when its last URL does.

use super::source::Source;
use crate::telemetry::redact_url;

/// A URL whose connections run this many times slower than the best URL's is dropped.
pub const SLOW_MIRROR: f64 = 4.0;

/// The live URLs of one file (coordinator-local: no locking).
#[derive(Debug)]
pub struct Mirrors {
    live: Vec<bool>,
    /// The URL whose probe gave the file's size and validators.
    pub probed_from: usize,
}

impl Mirrors {
    /// `count` URLs, all live.
    pub fn new(count: usize) -> Self {
        Self {
            live: vec![true; count.max(1)],
            probed_from: 0,
        }
    }

    /// Whether the file has more than one URL still live.
    pub fn several(&self) -> bool {
        self.live.iter().filter(|l| **l).count() > 1
    }

    /// Whether URL `index` is still in use.
    pub fn is_live(&self, index: usize) -> bool {
        self.live.get(index).copied().unwrap_or(false)
    }

    /// Live URLs in the order a new connection should try them: fewest connections (`load`,
    /// per URL) first, then the file's own URL; `avoid` (a URL being raced) last.
    pub fn preference(&self, load: &[usize], avoid: Option<usize>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.live.len()).filter(|&i| self.live[i]).collect();
        order.sort_by_key(|&i| (Some(i) == avoid, load.get(i).copied().unwrap_or(0), i));
        order
    }

    /// The first live URL (for a probe).
    pub fn first_live(&self) -> usize {
        self.live.iter().position(|l| *l).unwrap_or(0)
    }

    /// A live URL whose connections run [`SLOW_MIRROR`] times slower than the best live URL's,
    /// given each URL's summed rate and count of connections that have run long enough to judge.
    pub fn slowest(&self, rates: &[(f64, usize)]) -> Option<usize> {
        let mean = |i: usize| {
            let (sum, n) = *rates.get(i)?;
            (self.is_live(i) && n > 0).then(|| sum / n as f64)
        };
        let best = (0..rates.len()).filter_map(mean).fold(0.0, f64::max);
        (0..rates.len()).find(|&i| mean(i).is_some_and(|rate| rate * SLOW_MIRROR < best))
    }

    /// Drops URL `index` for the rest of the file, unless it is the last one live. Returns
    /// whether it was dropped.
    pub fn drop_source(&mut self, index: usize, source: &Source, reason: &str) -> bool {
        if !self.several() || !self.is_live(index) {
            return false;
        }
        self.live[index] = false;
        tracing::warn!(
            url = %redact_url(&source.url),
            mirror.index = index,
            reason,
            "dropping a mirror of the file: {reason}"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_loaded_live_url() {
        let mut mirrors = Mirrors::new(3);
        assert_eq!(mirrors.preference(&[0, 0, 0], None), vec![0, 1, 2]);
        assert_eq!(mirrors.preference(&[2, 1, 1], None), vec![1, 2, 0]);
        assert_eq!(mirrors.preference(&[0, 0, 0], Some(0)), vec![1, 2, 0]);
        let source = Source::new(url::Url::parse("http://m/x").unwrap(), Default::default());
        assert!(mirrors.drop_source(1, &source, "test"));
        assert_eq!(mirrors.preference(&[0, 0, 0], None), vec![0, 2]);
        assert!(mirrors.drop_source(0, &source, "test"));
        assert!(
            !mirrors.drop_source(2, &source, "test"),
            "the last URL stays"
        );
        assert_eq!(mirrors.first_live(), 2);
    }

    #[test]
    fn only_a_much_slower_live_url_is_slow() {
        let mut mirrors = Mirrors::new(3);
        // Per-connection means: 1 MB/s, 0.5 MB/s, 0.2 MB/s.
        let rates = [(2e6, 2), (0.5e6, 1), (0.4e6, 2)];
        assert_eq!(mirrors.slowest(&rates), Some(2));
        assert_eq!(
            mirrors.slowest(&[(2e6, 2), (0.5e6, 1), (0.0, 0)]),
            None,
            "unjudged"
        );
        let source = Source::new(url::Url::parse("http://m/x").unwrap(), Default::default());
        mirrors.drop_source(0, &source, "test");
        assert_eq!(
            mirrors.slowest(&rates),
            None,
            "judged against live URLs only"
        );
    }
}
