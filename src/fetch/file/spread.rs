//! How a file's connections use its URLs (its own and its mirrors'): which URL a new
//! connection takes, and dropping a URL that fails, serves another version or is much slower
//! (see `fetch::mirrors` for the rules). A file with one URL only ever takes the first branch
//! of [`FileRun::claim_source`].

use super::{FileRun, State};
use crate::fetch::Journal;
use crate::fetch::limits::HostPermit;

impl<J: Journal> FileRun<'_, J> {
    /// The URL a new connection takes, with a slot on its host (`first`: the file's only
    /// connection, which waits for its slot instead). `avoid`: a URL to take only if no other
    /// has room. With one URL this is the file's own, as before mirrors.
    pub(super) fn claim_source(
        &self,
        first: bool,
        avoid: Option<usize>,
    ) -> Option<(usize, Option<HostPermit>)> {
        if !self.mirrors.several() {
            // One URL (the common case): no choice to make.
            let source = self.mirrors.first_live();
            let host = &self.env.sources.get(source)?.host;
            let permit = if first {
                None
            } else {
                Some(self.env.hosts.try_acquire(host)?)
            };
            return Some((source, permit));
        }
        let mut load = vec![0; self.env.sources.len()];
        for slot in self.slots.iter().filter(|s| s.state == State::Active) {
            if let Some(n) = load.get_mut(slot.source) {
                *n += 1;
            }
        }
        let order = self.mirrors.preference(&load, avoid);
        if first {
            return order.first().map(|&source| (source, None));
        }
        order.into_iter().find_map(|source| {
            let host = &self.env.sources.get(source)?.host;
            Some((source, Some(self.env.hosts.try_acquire(host)?)))
        })
    }

    pub(super) fn on_dropped_source(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .is_some_and(|s| !self.mirrors.is_live(s.source))
    }

    /// Gives a failed connection's range to another connection.
    pub(super) fn requeue(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index)
            && slot.state == State::Active
        {
            slot.state = State::Pending;
            slot.stop = None;
        }
        self.fill();
    }

    /// Drops the URL of slot `index`'s connection after it failed, if another URL is left:
    /// its other connections stop, and their ranges (this one's too) go to the URLs left.
    pub(super) fn drop_source(&mut self, index: usize, reason: &str) -> bool {
        let Some(source) = self.slots.get(index).map(|s| s.source) else {
            return false;
        };
        let Some(url) = self.env.sources.get(source) else {
            return false;
        };
        if !self.mirrors.drop_source(source, url, reason) {
            return false;
        }
        self.stop_source(source);
        if self.probing {
            // The probe failed: probe again, from the next URL.
            self.probing = false;
            self.slots.clear();
            self.start_probe();
        } else {
            self.requeue(index);
        }
        true
    }

    /// Stops the connections on a dropped URL (their outcomes make their ranges pending).
    pub(super) fn stop_source(&mut self, source: usize) {
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.source == source && s.state == State::Active && s.races.is_none())
        {
            if let Some(stop) = slot.stop.take() {
                stop.cancel();
            }
        }
    }

    /// Drops a mirror whose connections run much slower than the best URL's.
    pub(super) fn drop_slow_mirror(&mut self) {
        if !self.mirrors.several() {
            return;
        }
        let mut rates = vec![(0.0, 0usize); self.env.sources.len()];
        for slot in self.slots.iter().filter(|s| s.judged()) {
            if let Some((sum, n)) = rates.get_mut(slot.source) {
                (*sum, *n) = (*sum + slot.rate, *n + 1);
            }
        }
        let Some(slow) = self.mirrors.slowest(&rates) else {
            return;
        };
        if let Some(url) = self.env.sources.get(slow)
            && self
                .mirrors
                .drop_source(slow, url, "much slower than the others")
        {
            self.stop_source(slow);
        }
    }
}
