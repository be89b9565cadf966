//! Manifests: a job's files as plain text, one URL per line, in the style of aria2's input
//! files.
//!
//! ```text
//! # comments and blank lines are ignored
//! https://example.com/a.bin
//!   sha256=9f86d08…
//!   out=weights/a.bin
//! https://example.com/b.bin
//!   dir=extra
//! ```
//!
//! Indented `key=value` lines set options of the URL above them: `sha256` (also aria2's
//! `checksum=sha-256=…`), `out` (the path below the job's `dest`) and `dir` (a directory
//! below `dest` for `out`, or for the name taken from the URL). Every error names its line.

use serde::Deserialize;
use utoipa::IntoParams;

use super::paths;
use super::request::{FileRequest, JobRequest, parse_url};
use super::{OnConflict, Sha256};

/// A manifest's job options, given as query parameters of `POST /v1/jobs` (a JSON body has
/// them in the body instead).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ManifestOptions {
    /// Manifest only: the directory the files go in, relative to the download root.
    pub dest: Option<String>,
    /// Manifest only: lower runs first; default 10.
    pub priority: Option<i64>,
    /// Manifest only: free text, searchable with `GET /v1/jobs?q=`.
    pub description: Option<String>,
    /// Manifest only: what to do when a destination exists; default `rename`.
    pub on_conflict: Option<OnConflict>,
}

impl ManifestOptions {
    /// The job request a manifest with these options stands for.
    pub fn into_request(self, files: Vec<FileRequest>) -> JobRequest {
        JobRequest {
            files: Some(files),
            dest: self.dest,
            priority: self.priority,
            description: self.description,
            on_conflict: self.on_conflict,
            ..JobRequest::default()
        }
    }
}

/// A manifest that does not parse, and the line (from 1) where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest line {line}: {message}")]
pub struct ManifestError {
    pub line: usize,
    pub message: String,
}

/// One URL with the options read so far.
struct Entry {
    line: usize,
    url: url::Url,
    sha256: Option<String>,
    out: Option<String>,
    dir: Option<String>,
}

impl Entry {
    fn into_file(self) -> FileRequest {
        let path = match (self.dir, self.out) {
            (Some(dir), out) => {
                let name = out.unwrap_or_else(|| paths::name_from_url(&self.url));
                Some(format!("{}/{name}", dir.trim_end_matches('/')))
            }
            (None, out) => out,
        };
        FileRequest {
            url: self.url.to_string(),
            path,
            sha256: self.sha256,
            mirrors: None,
            headers: None,
        }
    }

    fn set(&mut self, line: usize, option: &str) -> Result<(), ManifestError> {
        let fail = |message: String| ManifestError { line, message };
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| fail(format!("{option:?} is not an option (`key=value`)")))?;
        let (key, value) = (key.trim(), value.trim());
        let slot = match key {
            "sha256" | "checksum" => &mut self.sha256,
            "out" => &mut self.out,
            "dir" => &mut self.dir,
            _ => {
                return Err(fail(format!(
                    "unknown option {key:?}; use sha256, out or dir"
                )));
            }
        };
        if slot.is_some() {
            return Err(fail(format!(
                "{key} is given twice for the URL on line {}",
                self.line
            )));
        }
        let value = match key {
            "checksum" => value
                .strip_prefix("sha-256=")
                .ok_or_else(|| fail("only `checksum=sha-256=<hex>` is supported".into()))?,
            _ => value,
        };
        if matches!(key, "sha256" | "checksum") && Sha256::parse(value).is_none() {
            return Err(fail(format!(
                "{value:?} is not a SHA-256 digest (64 hex digits)"
            )));
        }
        if matches!(key, "out" | "dir") && !is_relative(value) {
            return Err(fail(format!(
                "{key} {value:?} must be a relative path below dest"
            )));
        }
        *slot = Some(value.to_owned());
        Ok(())
    }
}

/// Relative, without `..` and not empty: where a manifest may put a file. (The job's parse
/// confines the result to the download root again, symlinks included.)
fn is_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|part| part != "..")
}

/// The files of a manifest, in order.
pub fn parse(text: &str) -> Result<Vec<FileRequest>, ManifestError> {
    let mut files = Vec::new();
    let mut current: Option<Entry> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let entry = current.as_mut().ok_or_else(|| ManifestError {
                line,
                message: "an option line comes before any URL".into(),
            })?;
            entry.set(line, trimmed)?;
            continue;
        }
        if trimmed.contains('\t') {
            return Err(ManifestError {
                line,
                message: "one URL per line: several (mirrors) are not supported".into(),
            });
        }
        let url = parse_url(trimmed).map_err(|e| ManifestError {
            line,
            message: e.to_string(),
        })?;
        files.extend(current.replace(Entry {
            line,
            url,
            sha256: None,
            out: None,
            dir: None,
        }));
    }
    files.extend(current);
    if files.is_empty() {
        return Err(ManifestError {
            line: text.lines().count().max(1),
            message: "the manifest lists no URL".into(),
        });
    }
    Ok(files.into_iter().map(Entry::into_file).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn urls_take_the_options_indented_below_them() {
        let text = format!(
            "# weights\n\nhttps://h/a.bin\n  sha256={HASH}\n  out=w/a.bin\n\
             https://h/x/b.bin\n\tdir=extra/\r\nhttps://h/c.bin\n  dir=d\n  out=c2.bin\n\
             https://h/d.bin\n  checksum=sha-256={HASH}\n"
        );
        let files = parse(&text).unwrap();
        let got: Vec<_> = files
            .iter()
            .map(|f| (f.url.as_str(), f.path.as_deref(), f.sha256.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("https://h/a.bin", Some("w/a.bin"), Some(HASH)),
                ("https://h/x/b.bin", Some("extra/b.bin"), None),
                ("https://h/c.bin", Some("d/c2.bin"), None),
                ("https://h/d.bin", None, Some(HASH)),
            ]
        );
    }

    #[test]
    fn errors_name_their_line() {
        let line = |text: &str| {
            let err = parse(text).unwrap_err();
            assert!(err.to_string().starts_with("manifest line "), "{err}");
            (err.line, err.message)
        };
        assert_eq!(line("https://h/a\nftp://h/b\n").0, 2);
        assert_eq!(line("  out=x\nhttps://h/a").0, 1);
        let (at, why) = line("https://h/a\n\n  sha256=abc\n");
        assert_eq!(at, 3);
        assert!(why.contains("SHA-256"), "{why}");
        assert!(
            line("https://h/a\n  colour=red")
                .1
                .contains("unknown option")
        );
        assert!(line("https://h/a\n  out").1.contains("key=value"));
        assert!(line("https://h/a\n  out=a\n  out=b").1.contains("twice"));
        assert!(line("https://h/a\n  out=../x").1.contains("relative"));
        assert!(line("https://h/a\n  dir=/etc").1.contains("relative"));
        assert!(
            line("https://h/a\thttps://g/a")
                .1
                .contains("one URL per line")
        );
        assert!(line("https://h/a\n  checksum=md5=x").1.contains("sha-256"));
        assert!(line("# nothing\n\n").1.contains("no URL"));
        assert_eq!(line("").0, 1);
    }
}
