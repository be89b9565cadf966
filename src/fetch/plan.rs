//! Planning byte ranges: where to split a segment when a connection is free.
//!
//! Pure functions, so the arithmetic at the boundaries (tiny files, the last byte, alignment)
//! is tested on its own. A file starts as one segment; each added connection takes the tail
//! of a running range (work stealing), as long as both parts stay at least `min_segment` long.
//! Connections that start together share the ranges out evenly, so they finish together.

/// Split points are rounded down to this, so ranges (and writes) stay page-aligned.
const ALIGN: u64 = 64 * 1024;

/// Bytes a running connection is likely to receive before it sees a new end: the split point
/// keeps at least this far ahead of it, so little is fetched twice.
pub const IN_FLIGHT: u64 = 256 * 1024;

/// Where to split a range whose next byte to receive is `next` and whose end is `end`: the
/// start of the new (second) half, or `None` when the remainder is too small to share.
pub fn split_point(next: u64, end: u64, min_segment: u64) -> Option<u64> {
    cut(next, end, end.checked_sub(next)? / 2, min_segment)
}

/// The start of a new range that takes about `share` bytes off the end of `next..end`, if
/// both parts stay at least `min_segment` long and the cut is past the bytes in flight.
fn cut(next: u64, end: u64, share: u64, min_segment: u64) -> Option<u64> {
    let at = end.checked_sub(share)?;
    let at = at - at % ALIGN;
    let first = at.checked_sub(next)?;
    (first > IN_FLIGHT && first >= min_segment && end - at >= min_segment.max(ALIGN)).then_some(at)
}

/// Whether a file of `total` bytes is worth more than one connection.
pub fn splittable(total: u64, min_segment: u64) -> bool {
    split_point(0, total, min_segment).is_some()
}

/// Which of the running ranges `(index, next, end)` to split for the first of `new`
/// connections starting now, and where. The `new` connections are shared out among the ranges
/// so that the largest part left — the file's finish — is as small as it can be: each range
/// is to be cut into equal parts, and this connection takes one part off the end of the range
/// whose parts are largest. One connection so halves the largest remainder; fifteen starting
/// beside one running connection each take a sixteenth. A range is cut only into parts of at
/// least `min_segment`.
pub fn steal(
    ranges: impl IntoIterator<Item = (usize, u64, u64)>,
    min_segment: u64,
    new: usize,
) -> Option<(usize, u64)> {
    // (index, next, end, parts)
    let mut ranges: Vec<(usize, u64, u64, u64)> = ranges
        .into_iter()
        .filter(|&(_, next, end)| next < end)
        .map(|(index, next, end)| (index, next, end, 1))
        .collect();
    // Whether a range cut into `parts` keeps every part long enough.
    let fits = |next: u64, end: u64, parts: u64| {
        let share = (end - next) / parts;
        share >= min_segment.max(ALIGN) && cut(next, end, share, min_segment).is_some()
    };
    for _ in 0..new.max(1) {
        // One more part for the range whose parts are largest (the one the file's finish
        // waits for), if it can be cut once more.
        let best = ranges
            .iter_mut()
            .filter(|r| fits(r.1, r.2, r.3 + 1))
            .max_by_key(|r| (r.2 - r.1) / r.3);
        match best {
            Some(range) => range.3 += 1,
            None => break,
        }
    }
    let &(index, next, end, parts) = ranges
        .iter()
        .filter(|r| r.3 > 1)
        .max_by_key(|r| (r.2 - r.1) / r.3)?;
    let at = cut(next, end, (end - next) / parts, min_segment)
        .or_else(|| split_point(next, end, min_segment))?;
    Some((index, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_large_range_splits_in_the_middle_on_an_aligned_boundary() {
        let at = split_point(0, 64 * MIB, 4 * MIB).unwrap();
        assert_eq!(at % ALIGN, 0);
        assert!(at > 31 * MIB && at <= 33 * MIB, "{at}");
    }

    #[test]
    fn small_remainders_are_not_split() {
        assert_eq!(split_point(0, 0, 4 * MIB), None, "empty file");
        assert_eq!(split_point(0, 1, 4 * MIB), None, "one byte");
        assert_eq!(
            split_point(0, 8 * MIB, 4 * MIB),
            Some(4 * MIB),
            "two equal halves"
        );
        assert_eq!(
            split_point(0, 8 * MIB - 1, 4 * MIB),
            None,
            "one half too short"
        );
        assert_eq!(
            split_point(0, 600 * 1024, 1),
            None,
            "the running half would end within the bytes in flight"
        );
        assert_eq!(split_point(60 * MIB, 64 * MIB, 4 * MIB), None);
        assert_eq!(
            split_point(70 * MIB, 64 * MIB, 4 * MIB),
            None,
            "past the end"
        );
        assert!(!splittable(3 * MIB, 4 * MIB));
    }

    #[test]
    fn both_halves_respect_the_minimum_and_stay_ahead_of_the_reader() {
        for next in [0, 1, 12_345, 5 * MIB + 17] {
            for end in [next + 9 * MIB, next + 100 * MIB + 3] {
                let at = split_point(next, end, 4 * MIB).unwrap();
                assert!(at >= next + IN_FLIGHT, "{next} {end} {at}");
                assert!(
                    end - at >= 4 * MIB && at - next >= 4 * MIB,
                    "{next} {end} {at}"
                );
            }
        }
    }

    #[test]
    fn a_tiny_minimum_still_splits_sanely() {
        let at = split_point(0, 10 * MIB, 1).unwrap();
        assert!((IN_FLIGHT..10 * MIB).contains(&at));
    }

    #[test]
    fn stealing_takes_the_largest_splittable_remainder() {
        let ranges = [
            (0, 0, 20 * MIB),
            (1, 20 * MIB, 100 * MIB),
            (2, 99 * MIB, 100 * MIB),
        ];
        let (index, at) = steal(ranges, 4 * MIB, 1).unwrap();
        assert_eq!(index, 1);
        assert_eq!(at, 60 * MIB, "the largest remainder is halved");
        assert_eq!(steal([(0, 0, 5 * MIB)], 4 * MIB, 1), None);
    }

    /// Cuts ranges the way the engine does as `new` connections start one after another.
    fn start(mut ranges: Vec<(u64, u64)>, min_segment: u64, new: usize) -> Vec<u64> {
        for left in (1..=new).rev() {
            let running = ranges.iter().enumerate().map(|(i, &(n, e))| (i, n, e));
            let Some((index, at)) = steal(running, min_segment, left) else {
                break;
            };
            let end = std::mem::replace(&mut ranges[index].1, at);
            ranges.push((at, end));
        }
        let mut lengths: Vec<u64> = ranges.iter().map(|(n, e)| e - n).collect();
        lengths.sort_unstable();
        lengths
    }

    #[test]
    fn connections_starting_together_get_equal_parts() {
        // Fifteen beside the probe's connection, which is 100 KiB into a 256 MiB file.
        let lengths = start(vec![(100 * 1024, 256 * MIB)], 4 * MIB, 15);
        assert_eq!(lengths.len(), 16);
        let (shortest, longest) = (lengths[0], lengths[15]);
        assert!(longest - shortest <= 2 * ALIGN, "{lengths:?}");
        // Twelve in all is not a power of two: still equal, where halving would leave some
        // parts twice as long as others.
        let lengths = start(vec![(0, 96 * MIB)], 4 * MIB, 11);
        assert_eq!(lengths.len(), 12);
        assert!(lengths[11] - lengths[0] <= 2 * ALIGN, "{lengths:?}");
        // Four equal ranges and eight new connections: each range in three.
        let four = (0..4).map(|i| (i * 30 * MIB, (i + 1) * 30 * MIB)).collect();
        let lengths = start(four, 4 * MIB, 8);
        assert_eq!(lengths.len(), 12);
        assert!(lengths[11] - lengths[0] <= 2 * ALIGN, "{lengths:?}");
    }

    #[test]
    fn the_next_connection_goes_to_the_range_the_finish_waits_for() {
        // Two connections for a 5 MiB and a 9 MiB range: one each.
        let ranges = [(0, 0, 5 * MIB), (1, 10 * MIB, 19 * MIB)];
        let (index, at) = steal(ranges, MIB, 2).unwrap();
        // Not thirds of the larger range: that would leave the 5 MiB one as the finish.
        assert_eq!(
            (index, at),
            (1, 14_848 * 1024),
            "first the larger range, in halves"
        );
        let ranges = [
            (0, 0, 5 * MIB),
            (1, 10 * MIB, 14_500 * 1024),
            (2, 14_500 * 1024, 19 * MIB),
        ];
        let (index, at) = steal(ranges, MIB, 1).unwrap();
        assert_eq!(
            (index, at),
            (0, 2_560 * 1024),
            "then the 5 MiB range, in halves"
        );
    }

    #[test]
    fn parts_never_go_below_the_minimum() {
        // 20 MiB with a 4 MiB minimum holds five parts, however many connections start.
        let lengths = start(vec![(0, 20 * MIB)], 4 * MIB, 15);
        assert_eq!(lengths.len(), 5, "{lengths:?}");
        assert!(lengths.iter().all(|&l| l >= 4 * MIB), "{lengths:?}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A split point is aligned, strictly inside the range, past the bytes in flight,
        /// and leaves both halves at least `min_segment` long.
        #[test]
        fn a_split_leaves_two_fair_halves(
            next in 0u64..1 << 44,
            len in 0u64..1 << 40,
            min_segment in 1u64..1 << 28,
        ) {
            let end = next + len;
            match split_point(next, end, min_segment) {
                Some(at) => {
                    prop_assert_eq!(at % ALIGN, 0);
                    prop_assert!(at > next + IN_FLIGHT && at < end);
                    prop_assert!(at - next >= min_segment);
                    prop_assert!(end - at >= min_segment.max(ALIGN));
                }
                // Only a remainder too small to share stays whole.
                None => prop_assert!(
                    len < 2 * (IN_FLIGHT.max(min_segment) + ALIGN),
                    "{len} bytes were not split"
                ),
            }
        }

        /// Splitting the largest remainder again and again, with connections at any point of
        /// their ranges, keeps the ranges an exact cover of the file: no gap, no overlap, no
        /// byte still to fetch moved behind a connection.
        #[test]
        fn stealing_keeps_an_exact_cover(
            total in 0u64..1 << 36,
            min_segment in ALIGN..16 * 1024 * 1024,
            progress in proptest::collection::vec(0.0f64..1.0, 1..64),
            new in 1usize..32,
        ) {
            // (start, next, end) of each range.
            let mut ranges = vec![(0u64, 0u64, total)];
            for share in progress {
                let running = ranges.iter().enumerate().map(|(i, &(_, next, end))| (i, next, end));
                let Some((index, at)) = steal(running, min_segment, new) else { break };
                let (start, next, end) = ranges[index];
                prop_assert!(at > next && at < end);
                ranges[index] = (start, next, at);
                ranges.push((at, at, end));
                // The connection that took the new range gets some way into it.
                let last = ranges.len() - 1;
                ranges[last].1 = at + ((end - at) as f64 * share) as u64;
            }
            ranges.sort_unstable();
            prop_assert_eq!(ranges.first().map(|r| r.0), Some(0));
            prop_assert_eq!(ranges.last().map(|r| r.2), Some(total));
            for pair in ranges.windows(2) {
                prop_assert_eq!(pair[0].2, pair[1].0, "a gap or an overlap: {:?}", pair);
            }
            for &(start, next, end) in &ranges {
                prop_assert!(start <= next && next <= end);
                if ranges.len() > 1 {
                    prop_assert!(end - start >= min_segment, "{start}..{end} is too short");
                }
            }
        }
    }
}
