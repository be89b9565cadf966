//! Saved segment plans and what a resume from one may ask for, shared by the in-process and the
//! end-to-end tests of range-by-range resume.

use std::path::Path;

use haul::domain::Segment;

use super::origin::Origin;

/// The segments the store in `data_dir` holds for the job's first file, sorted by start. Only
/// while no daemon runs on that directory.
pub async fn saved_segments(data_dir: &Path, id: &str) -> Vec<Segment> {
    let store = haul::store::Store::open(&data_dir.join("haul.db"))
        .await
        .unwrap();
    let files = store.files_for_run(id.parse().unwrap()).await.unwrap();
    store.close().await;
    let mut segments = files[0].segments.clone();
    segments.sort_by_key(|s| s.start);
    segments
}
/// Checks a saved plan: it tiles the file, several ranges have bytes, some are unfinished.
pub fn assert_plan(segments: &[Segment], total: u64, done: u64) {
    let mut at = 0;
    for segment in segments {
        assert_eq!(segment.start, at, "{segments:#?}");
        at = segment.end.unwrap();
        assert!(segment.written <= at - segment.start, "{segments:#?}");
    }
    assert_eq!(at, total, "{segments:#?}");
    assert_eq!(segments.iter().map(|s| s.written).sum::<u64>(), done);
    let started = segments.iter().filter(|s| s.written > 0).count();
    assert!(started >= 2, "several ranges have bytes: {segments:#?}");
    assert!(done < total);
}

/// After a resume from `segments`, the requests from `before` on ask only for bytes past each
/// range's checkpoint, guarded by the validator, and every unfinished range continues at its
/// checkpoint.
pub fn assert_resumed_range_by_range(
    origin: &Origin,
    path: &str,
    segments: &[Segment],
    before: usize,
) {
    let etag = origin.etag(path);
    let seen = origin.requests(path);
    let after = &seen[before..];
    assert!(!after.is_empty());
    for later in after {
        assert_eq!(later.if_range.as_deref(), Some(etag.as_str()), "{later:?}");
        assert_eq!(later.status, 206, "{later:?}");
        let (first, end) = later
            .bounds()
            .unwrap_or_else(|| panic!("not bounded: {later:?}"));
        let range = segments
            .iter()
            .find(|s| s.start <= first && first < s.end.unwrap())
            .unwrap();
        assert!(
            first >= range.start + range.written && end <= range.end.unwrap(),
            "{later:?} asks for bytes before the checkpoint of {range:?}"
        );
    }
    for range in segments {
        let next = range.start + range.written;
        if next < range.end.unwrap() {
            assert!(
                after.iter().any(|s| s.range_start() == next),
                "{range:?} did not continue at its checkpoint: {after:#?}"
            );
        }
    }
}
