//! Naming a file after its first response.
//!
//! A file whose name was not given (`auto_name`: a directory `dest`, no `files[].path`) is
//! claimed under the URL's name like any other, so that files without `Content-Disposition` —
//! nearly all of them — cost nothing more. When the first response suggests a name, the
//! destination moves there before a byte is written: the new name is settled like a fresh one
//! (conflict policy, an existing file with the expected checksum, claims in the registry, the
//! store and on disk), then the empty `.part` under the URL's name is removed and its claim
//! released. The store's `claim_path` rewrites the file's path, so the API shows the URL's name
//! until the response names the file, and the server's name from then on.

use std::collections::HashSet;
use std::sync::Arc;

use super::Ctx;
use super::destination::{self, Destination};
use crate::domain::FileRecord;
use crate::domain::paths::{is_numbered_alternative, name_from_server, name_from_url};
use crate::fetch::place::{file_name, remove_part, sibling};
use crate::fetch::{FetchError, FileTask, LiveFile, Opening};

/// Moves `destination` to the name the server suggests. `None` when there is nothing to
/// download there (an existing file with the expected checksum, or `skip`), already recorded.
pub(super) async fn rename<'a>(
    ctx: &'a Ctx<'a>,
    record: &FileRecord,
    destination: Destination<'a>,
    suggested: &str,
    live: &Arc<LiveFile>,
) -> Result<Option<Destination<'a>>, FetchError> {
    let current = destination.claim.rel.clone();
    let Some(name) = name_from_server(suggested) else {
        return Ok(Some(destination));
    };
    let wanted = sibling(&current, &name);
    if wanted == current || named_before(record, &current, &name) {
        return Ok(Some(destination));
    }
    let named = FileRecord {
        path: wanted,
        ..record.clone()
    };
    let settled = destination::plan(ctx, &named, live, HashSet::new()).await;
    if let Ok(Some(next)) = &settled {
        tracing::info!(
            file.id = %record.id,
            "{current} is named {} by the server", next.claim.rel
        );
    }
    // Whatever became of the new name, the URL's `.part` (empty: nothing was written yet) is
    // ours to remove; dropping the old destination then releases its registry claim.
    remove_part(&ctx.engine.inner.root, &current).await;
    drop(destination);
    settled
}

/// Whether an earlier attempt already moved the file to `name`, and the conflict policy chose
/// an alternative of it (`name (1).ext`): a retried file sees the same header again. A file
/// still under its URL's name (or an alternative of that) has not been named yet.
fn named_before(record: &FileRecord, current: &str, name: &str) -> bool {
    let current = file_name(current);
    let from_url = url::Url::parse(&record.url)
        .map(|url| name_from_url(&url))
        .unwrap_or_default();
    let unnamed = current == from_url || is_numbered_alternative(current, &from_url);
    !unnamed && is_numbered_alternative(current, name)
}

/// Makes a fresh `auto_name` file's first request and moves its destination to the name the
/// response suggests. `None` when nothing is left to download (see [`rename`]); otherwise the
/// destination with the first request, for the fetch to carry on with.
pub(super) async fn open<'a>(
    ctx: &'a Ctx<'a>,
    record: &FileRecord,
    destination: Destination<'a>,
    task: &mut FileTask,
    live: &Arc<LiveFile>,
) -> Result<Option<(Destination<'a>, Option<Opening>)>, FetchError> {
    if !record.auto_name || !task.segments.is_empty() {
        return Ok(Some((destination, None)));
    }
    let inner = &ctx.engine.inner;
    let opening = inner.fetcher.open(task, live, &ctx.run.stop).await?;
    let Some(name) = opening.suggested_name() else {
        return Ok(Some((destination, Some(opening))));
    };
    let Some(destination) = rename(ctx, record, destination, name, live).await? else {
        return Ok(None);
    };
    task.rel.clone_from(&destination.claim.rel);
    Ok(Some((destination, Some(opening))))
}
