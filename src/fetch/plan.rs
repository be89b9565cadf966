//! Planning byte ranges: where to split a segment when a connection is free.
//!
//! Pure functions, so the arithmetic at the boundaries (tiny files, the last byte, alignment)
//! is tested on its own. A file starts as one segment; each added connection takes the second
//! half of the largest remaining range (work stealing), as long as both halves stay at least
//! `min_segment` long.

/// Split points are rounded down to this, so ranges (and writes) stay page-aligned.
const ALIGN: u64 = 64 * 1024;

/// Bytes a running connection is likely to receive before it sees a new end: the split point
/// keeps at least this far ahead of it, so little is fetched twice.
pub const IN_FLIGHT: u64 = 256 * 1024;

/// Where to split a range whose next byte to receive is `next` and whose end is `end`: the
/// start of the new (second) half, or `None` when the remainder is too small to share.
pub fn split_point(next: u64, end: u64, min_segment: u64) -> Option<u64> {
    let remaining = end.checked_sub(next.saturating_add(IN_FLIGHT))?;
    if remaining < min_segment.saturating_mul(2).max(2 * ALIGN) {
        return None;
    }
    let mid = next + IN_FLIGHT + remaining / 2;
    let aligned = mid - mid % ALIGN;
    (aligned > next + IN_FLIGHT && end - aligned >= min_segment.max(ALIGN)).then_some(aligned)
}

/// Whether a file of `total` bytes is worth more than one connection.
pub fn splittable(total: u64, min_segment: u64) -> bool {
    split_point(0, total, min_segment).is_some()
}

/// Among `(index, next, end)` of running segments, the one whose remainder is largest and can
/// be split, with the split point.
pub fn steal(
    ranges: impl IntoIterator<Item = (usize, u64, u64)>,
    min_segment: u64,
) -> Option<(usize, u64)> {
    ranges
        .into_iter()
        .filter_map(|(index, next, end)| {
            split_point(next, end, min_segment).map(|at| (index, at, end - next))
        })
        .max_by_key(|(_, _, remaining)| *remaining)
        .map(|(index, at, _)| (index, at))
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
            None,
            "in-flight bytes make it too small"
        );
        assert!(split_point(0, 9 * MIB, 4 * MIB).is_some());
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
        let (index, at) = steal(ranges, 4 * MIB).unwrap();
        assert_eq!(index, 1);
        assert!(at > 55 * MIB && at < 65 * MIB);
        assert_eq!(steal([(0, 0, 5 * MIB)], 4 * MIB), None);
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
                    len < IN_FLIGHT + 2 * min_segment.max(ALIGN) + 2 * ALIGN,
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
        ) {
            // (start, next, end) of each range.
            let mut ranges = vec![(0u64, 0u64, total)];
            for share in progress {
                let running = ranges.iter().enumerate().map(|(i, &(_, next, end))| (i, next, end));
                let Some((index, at)) = steal(running, min_segment) else { break };
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
