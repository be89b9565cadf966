//! Byte ranges of a file and how much of each is on disk.
//!
//! Invariant: `written <= end - start` when `end` is known. Bytes `[start, start + written)`
//! are in `NAME.part` and were fsynced before the store recorded `written`.

/// One byte range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Position within the file's plan, from 0.
    pub index: u32,
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte; `None` when the file's length is unknown (read to end of body).
    pub end: Option<u64>,
    /// Bytes already written from `start`.
    pub written: u64,
}

impl Segment {
    /// The whole of a file of the given length (or of unknown length), nothing written yet.
    pub fn whole(total: Option<u64>) -> Self {
        Self {
            index: 0,
            start: 0,
            end: total,
            written: 0,
        }
    }

    /// The next byte to fetch.
    pub fn next_offset(&self) -> u64 {
        self.start + self.written
    }

    /// True when every byte of a known-length range is written.
    pub fn is_complete(&self) -> bool {
        self.end.is_some_and(|end| self.next_offset() >= end)
    }

    /// Bytes still missing, when the length is known.
    pub fn remaining(&self) -> Option<u64> {
        self.end.map(|end| end.saturating_sub(self.next_offset()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_arithmetic() {
        let mut s = Segment::whole(Some(100));
        assert_eq!(s.remaining(), Some(100));
        s.written = 60;
        assert_eq!(s.next_offset(), 60);
        assert!(!s.is_complete());
        s.written = 100;
        assert!(s.is_complete());
        assert!(!Segment::whole(None).is_complete());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What is written and what remains add up to the range, and a range is complete
        /// exactly when nothing remains.
        #[test]
        fn written_and_remaining_add_up(
            start in 0u64..1 << 50,
            len in 0u64..1 << 40,
            written_share in 0.0f64..=1.0,
        ) {
            let written = (len as f64 * written_share) as u64;
            let segment = Segment { index: 0, start, end: Some(start + len), written };
            prop_assert_eq!(segment.next_offset(), start + written);
            prop_assert_eq!(segment.remaining(), Some(len - written));
            prop_assert_eq!(segment.is_complete(), written == len);
        }
    }
}
