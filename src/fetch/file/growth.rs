//! How many connections a file gets: more while they add throughput. The count doubles each
//! window for as long as the rate rises enough, and a step that lowered it is undone.

use std::time::{Duration, Instant};

/// Throughput is judged over windows this long: long enough that bursty arrivals do not read
/// as noise, short enough to reach 16 connections in well under a second.
const WINDOW: Duration = Duration::from_millis(100);

/// The first connection is checked for a per-connection limit sooner: a throttled file should
/// not spend long on one connection. A fast one is then measured over a full window before two
/// are compared with it, because the short window reads low while the stream ramps up and so
/// made any second connection look like a gain (on a fast local link, a probe of four).
const FIRST_WINDOW: Duration = Duration::from_millis(10);

/// A doubling of connections must raise throughput by this factor to be kept growing.
const GROWTH_GAIN: f64 = 1.15;

/// One connection slower than this (bytes per second) on a file worth splitting suggests a
/// per-connection limit: the engine goes to its ceiling at once and undoes it if that does not
/// pay.
const SLOW_CONNECTION: f64 = 64.0 * 1024.0 * 1024.0;

/// A doubling that raised throughput by this factor suggests more connections keep paying.
const STEEP_GAIN: f64 = 1.7;

/// Adds connections while they add throughput.
pub(super) struct Growth {
    /// Connections the file should have now.
    pub(super) target: usize,
    max: usize,
    /// When the current window began, and the bytes done then.
    window: (Instant, u64),
    /// The rate before the last increase, and the target it was reached with.
    rate_before: f64,
    previous: usize,
    settled: bool,
    /// Whether the first connection's short window has been judged.
    first_checked: bool,
}

impl Growth {
    pub(super) fn new(max: usize, done: u64, now: Instant) -> Self {
        Self {
            target: 1,
            max: max.max(1),
            window: (now, done),
            rate_before: 0.0,
            previous: 1,
            settled: false,
            first_checked: false,
        }
    }

    /// Judges the window that just ended, if one did, with `active` connections at work and
    /// `limit` (the tightest bandwidth limit) in force, and sets the target for the next.
    pub(super) fn update(&mut self, now: Instant, done: u64, active: usize, limit: Option<u64>) {
        let (started, before) = self.window;
        let elapsed = now.saturating_duration_since(started);
        let window = if self.first_checked {
            WINDOW
        } else {
            FIRST_WINDOW
        };
        if elapsed < window {
            return;
        }
        self.window = (now, done);
        let rate = done.saturating_sub(before) as f64 / elapsed.as_secs_f64();
        // Judge only at full strength, and only once.
        if self.settled || self.target >= self.max || active < self.target {
            return;
        }
        // Under our own bandwidth limit more connections cannot help.
        if limit.is_some_and(|limit| rate >= 0.9 * limit as f64) {
            self.settled = true;
            return;
        }
        let first = !std::mem::replace(&mut self.first_checked, true);
        if first && rate >= SLOW_CONNECTION {
            return;
        }
        if self.target > 1 && rate <= self.rate_before * GROWTH_GAIN {
            self.settled = true;
            if rate < self.rate_before {
                // The last increase cost throughput (a saturated CPU or disk): undo it.
                self.target = self.previous;
            }
            tracing::debug!(
                connections = self.target,
                bytes_per_second = rate as u64,
                "more connections do not pay"
            );
            return;
        }
        // A single connection well below what a local link carries, or a doubling that nearly
        // doubled the rate, shows a per-connection limit (a throttling server, a long fat
        // pipe): grow much faster from there. A step that does not pay is undone next window.
        let next = if self.target == 1 && rate < SLOW_CONNECTION {
            self.max
        } else if self.target > 1 && rate >= self.rate_before * STEEP_GAIN {
            self.target * 4
        } else {
            self.target * 2
        };
        (self.previous, self.rate_before) = (self.target, rate);
        self.target = next.min(self.max);
        tracing::debug!(
            connections = self.target,
            bytes_per_second = rate as u64,
            "adding connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    /// Runs one window of `ms` milliseconds at `rate` bytes per second with the target's
    /// connections all at work; returns the new target.
    fn window(growth: &mut Growth, clock: &mut (Instant, u64), ms: u64, rate: u64) -> usize {
        clock.0 += Duration::from_millis(ms);
        clock.1 += rate * ms / 1000;
        growth.update(clock.0, clock.1, growth.target, None);
        growth.target
    }

    fn start(max: usize) -> (Growth, (Instant, u64)) {
        let now = Instant::now();
        (Growth::new(max, 0, now), (now, 0))
    }

    #[test]
    fn a_fast_first_connection_is_measured_over_a_full_window_before_a_second() {
        let (mut g, mut clock) = start(16);
        assert_eq!(
            window(&mut g, &mut clock, 5, 1600 * MB),
            1,
            "not yet a window"
        );
        // The short window shows no per-connection limit; it reads low while the stream
        // ramps up, so it is no baseline for two connections.
        assert_eq!(window(&mut g, &mut clock, 5, 1600 * MB), 1);
        assert_eq!(window(&mut g, &mut clock, 100, 2600 * MB), 2);
        // Two are 8 % faster than one: not worth doubling again, and no worse.
        assert_eq!(window(&mut g, &mut clock, 100, 2800 * MB), 2);
        assert_eq!(window(&mut g, &mut clock, 100, 1000 * MB), 2, "settled");
    }

    #[test]
    fn a_doubling_that_costs_throughput_is_undone() {
        let (mut g, mut clock) = start(16);
        assert_eq!(window(&mut g, &mut clock, 10, 1600 * MB), 1);
        assert_eq!(window(&mut g, &mut clock, 100, 2600 * MB), 2);
        // Two are slower than one (a saturated CPU): back to one, for good.
        assert_eq!(window(&mut g, &mut clock, 100, 2400 * MB), 1);
        assert_eq!(window(&mut g, &mut clock, 100, 4000 * MB), 1, "settled");
        // The same from four back to two.
        let (mut g, mut clock) = start(16);
        assert_eq!(window(&mut g, &mut clock, 10, 1600 * MB), 1);
        assert_eq!(window(&mut g, &mut clock, 100, 2000 * MB), 2);
        assert_eq!(window(&mut g, &mut clock, 100, 2600 * MB), 4);
        assert_eq!(window(&mut g, &mut clock, 100, 2500 * MB), 2);
    }

    #[test]
    fn growth_stops_without_undoing_a_step_that_merely_did_not_pay() {
        let (mut g, mut clock) = start(16);
        assert_eq!(window(&mut g, &mut clock, 10, 200 * MB), 1);
        assert_eq!(window(&mut g, &mut clock, 100, 200 * MB), 2);
        assert_eq!(window(&mut g, &mut clock, 100, 300 * MB), 4);
        // 5 % more is not worth doubling again, but no worse: the four stay.
        assert_eq!(window(&mut g, &mut clock, 100, 315 * MB), 4);
    }

    #[test]
    fn doublings_that_nearly_double_the_rate_grow_four_fold() {
        let (mut g, mut clock) = start(64);
        assert_eq!(window(&mut g, &mut clock, 10, 100 * MB), 1);
        assert_eq!(window(&mut g, &mut clock, 100, 100 * MB), 2);
        // Two against one, both full windows: the doubling nearly doubled the rate.
        assert_eq!(window(&mut g, &mut clock, 100, 190 * MB), 8);
        assert_eq!(window(&mut g, &mut clock, 100, 700 * MB), 32);
        assert_eq!(
            window(&mut g, &mut clock, 100, 2500 * MB),
            64,
            "capped at the maximum"
        );
    }

    #[test]
    fn a_slow_first_connection_goes_to_the_ceiling_at_once() {
        let (mut g, mut clock) = start(16);
        // 8 MB/s: a per-connection throttle.
        assert_eq!(window(&mut g, &mut clock, 10, 8 * MB), 16);
    }

    #[test]
    fn a_window_is_judged_only_at_full_strength_and_under_the_limit() {
        let (mut g, mut clock) = start(16);
        assert_eq!(window(&mut g, &mut clock, 10, 500 * MB), 1);
        assert_eq!(window(&mut g, &mut clock, 100, 500 * MB), 2);
        // One of the two has not started yet: the window is not judged.
        clock.0 += Duration::from_millis(100);
        clock.1 += 50 * MB;
        g.update(clock.0, clock.1, 1, None);
        assert_eq!(g.target, 2);
        // At 90 % of a bandwidth limit more connections cannot help.
        clock.0 += Duration::from_millis(100);
        clock.1 += 95 * MB;
        g.update(clock.0, clock.1, 2, Some(1000 * MB));
        assert_eq!(g.target, 2);
        assert_eq!(window(&mut g, &mut clock, 100, 2000 * MB), 2, "settled");
    }
}
