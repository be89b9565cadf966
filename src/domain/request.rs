//! A job submission, and its parsing into a [`NewJob`] that is known to be valid.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::paths::{self, DownloadRoot, PathError};
use super::template::{self, TemplateError};
use super::{FileId, JobId, JobLimits, OnConflict, Priority, Sha256};

const MAX_URL_BYTES: usize = 8192;
const MAX_DESCRIPTION_BYTES: usize = 4096;
const MAX_HEADERS: usize = 64;
const MAX_MIRRORS: usize = 16;

/// Headers haul sets itself (ranges, framing, the connection): a job may not override them.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "range",
    "if-range",
    "accept-encoding",
    "proxy-connection",
];

/// The body of `POST /v1/jobs`: one `url`, several `files`, or a `url_template`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The one file to fetch (http or https). Give exactly one of `url`, `files` and
    /// `url_template`.
    #[schema(
        example = "https://example.com/model.safetensors",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\\s]+([/?#]\\S*)?$"
    )]
    pub url: Option<String>,
    /// Several files fetched as one job.
    pub files: Option<Vec<FileRequest>>,
    /// A URL with brace expressions, one file per expansion: `{0001..1000}` (zero padding
    /// kept), `{0..100..10}` (a step), `{9..0}` (down), `{a,b,c}` (a list); several multiply.
    /// At most `max_files_per_job` expansions. Each file is named after its URL's last
    /// segment, in `dest` as a directory.
    #[schema(example = "https://example.com/shards/part-{0001..0100}.bin")]
    pub url_template: Option<String>,
    /// Where to put the result, relative to the download root. Ending in `/`, naming an existing
    /// directory or used with `files`, it is a directory and names come from the URLs (or
    /// `files[].path`); otherwise it is the file's path. Default: the root itself.
    pub dest: Option<String>,
    /// Lower runs first; default 10; from -1000000 to 1000000.
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i64>,
    /// Free text, searchable with `GET /v1/jobs?q=`.
    pub description: Option<String>,
    /// Extra request headers. Values are stored but never returned or logged.
    pub headers: Option<BTreeMap<String, String>>,
    /// Sent as `Authorization: Bearer …`. Stored but never returned or logged.
    pub access_token: Option<String>,
    /// Expected SHA-256 (hex) of the single file given by `url`.
    pub sha256: Option<String>,
    /// What to do when the destination already exists. Default `rename`.
    pub on_conflict: Option<OnConflict>,
    /// Connections per file at most (1 to 1024); default: the daemon's setting.
    #[schema(minimum = 1, maximum = 1024)]
    pub max_connections: Option<u32>,
    /// Smallest range worth another connection, at least 65536 bytes; default: the daemon's.
    #[schema(minimum = 65_536, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_segment_size: Option<u64>,
    /// This job's download rate limit in bytes per second (at least 1); default: none.
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    pub max_bytes_per_second: Option<u64>,
    /// Where this job's events are POSTed as they happen (http or https), signed with the
    /// daemon's `webhook_secret`. Stored, never returned (it may carry a token).
    #[schema(example = "https://example.com/hooks/haul")]
    pub callback_url: Option<String>,
    /// Other URLs serving the same bytes as `url` (mirrors): ranges are spread over all of
    /// them, and one that fails, is much slower or serves another version is dropped.
    pub mirrors: Option<Vec<String>>,
    /// Proxy for this job's requests (`http://`, `https://`, `socks5://` or `socks5h://`,
    /// where the proxy resolves names), instead of the daemon's. Hosts in the daemon's
    /// `no_proxy` are still reached directly. Stored, never returned (it may carry a password).
    #[schema(example = "socks5h://127.0.0.1:1080")]
    pub proxy: Option<String>,
}

/// One file of a multi-file job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRequest {
    /// Where to fetch it from (http or https).
    pub url: String,
    /// Its path below the job's `dest` directory; default: the URL's last segment.
    pub path: Option<String>,
    /// Expected SHA-256 (hex).
    pub sha256: Option<String>,
    /// Other URLs serving the same bytes (mirrors); see the job's `mirrors`.
    pub mirrors: Option<Vec<String>>,
    /// Extra request headers for this file, over the job's (a name in both: this file's
    /// value). Stored but never returned or logged.
    pub headers: Option<BTreeMap<String, String>>,
}

/// Why a submission was rejected. The API gives each variant a stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("give one of `url`, `files` and `url_template`")]
    MissingSource,
    #[error("give only one of `url`, `files` and `url_template`")]
    AmbiguousSource,
    #[error("{0}")]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Manifest(#[from] super::manifest::ManifestError),
    #[error("a job must have between 1 and {max} files")]
    FileCount { max: usize },
    #[error("{url:?} is not a valid URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("scheme {0:?} is not supported; only http and https are")]
    UnsupportedScheme(String),
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("two files of the job would be written to {0:?}")]
    DuplicatePath(String),
    #[error("priority must be between {} and {}", Priority::MIN, Priority::MAX)]
    Priority,
    #[error("{0:?} is not a SHA-256 digest (64 hex digits)")]
    Sha256(String),
    #[error("`sha256` applies to a single `url`; give `files[].sha256` instead")]
    Sha256WithFiles,
    #[error("`mirrors` applies to a single `url`; give `files[].mirrors` instead")]
    MirrorsWithFiles,
    #[error("header {name:?}: {reason}")]
    Header { name: String, reason: String },
    #[error("description is longer than {MAX_DESCRIPTION_BYTES} bytes")]
    Description,
    #[error("{0}")]
    Limit(&'static str),
    #[error("callback_url: {0}")]
    CallbackUrl(String),
    #[error("proxy: {0}")]
    Proxy(String),
}

/// A validated job, ready for the store.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub priority: Priority,
    pub description: Option<String>,
    pub dest: Option<String>,
    pub on_conflict: OnConflict,
    pub limits: JobLimits,
    /// Secret: stored, never shown.
    pub headers: Vec<(String, String)>,
    /// Secret: stored, never shown.
    pub access_token: Option<String>,
    /// Where the job's events are delivered, besides the global subscriptions.
    pub callback_url: Option<url::Url>,
    /// Secret (it may carry a password): stored, never shown.
    pub proxy: Option<String>,
    pub files: Vec<NewFile>,
}

/// A validated file of a new job.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub id: FileId,
    pub url: url::Url,
    /// Planned destination relative to the download root (the conflict policy may change it).
    pub path: String,
    pub sha256: Option<Sha256>,
    /// Other URLs serving the same bytes.
    pub mirrors: Vec<url::Url>,
    /// The name was not given (a directory `dest` without `files[].path`): the first response
    /// may name the file (`Content-Disposition`); until then it is the URL's.
    pub auto_name: bool,
    /// This file's own extra headers (secrets, like the job's).
    pub headers: Vec<(String, String)>,
}

impl JobRequest {
    /// Validates everything and resolves destinations inside `root`. Touches the disk only to
    /// see whether `dest` is an existing directory and to check that no symlink leads out.
    pub fn parse(self, root: &DownloadRoot, max_files: usize) -> Result<NewJob, ValidationError> {
        let priority = match self.priority {
            Some(p) => Priority::new(p).ok_or(ValidationError::Priority)?,
            None => Priority::DEFAULT,
        };
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION_BYTES)
        {
            return Err(ValidationError::Description);
        }
        let limits = JobLimits {
            max_connections: self.max_connections,
            min_segment_size: self.min_segment_size,
            max_bytes_per_second: self.max_bytes_per_second,
        };
        check_limits(&limits)?;
        let headers = parse_headers(self.headers.unwrap_or_default())?;
        let callback_url = self
            .callback_url
            .as_deref()
            .map(parse_callback_url)
            .transpose()?;
        if let Some(token) = &self.access_token {
            check_access_token(token)?;
        }
        if let Some(proxy) = &self.proxy {
            crate::fetch::parse_proxy(proxy).map_err(ValidationError::Proxy)?;
        }
        let listed = self.files.is_some() || self.url_template.is_some();
        let sources = sources(
            self.url,
            self.files,
            self.url_template,
            self.sha256,
            self.mirrors,
            max_files,
        )?;
        if sources.is_empty() || sources.len() > max_files {
            return Err(ValidationError::FileCount { max: max_files });
        }
        let dest = match &self.dest {
            Some(d) => Some(root.relative_components(d)?.join("/")),
            None => None,
        };
        let dest_is_dir = listed
            || dest
                .as_deref()
                .is_none_or(|d| d.is_empty() || root.is_dir(d))
            || self.dest.as_deref().is_some_and(|d| d.ends_with('/'));
        let files = plan_files(root, dest.as_deref().unwrap_or(""), dest_is_dir, sources)?;
        Ok(NewJob {
            id: JobId::new(),
            priority,
            description: self.description,
            dest,
            on_conflict: self.on_conflict.unwrap_or_default(),
            limits,
            headers,
            access_token: self.access_token,
            callback_url,
            proxy: self.proxy,
            files,
        })
    }
}

fn sources(
    url: Option<String>,
    files: Option<Vec<FileRequest>>,
    url_template: Option<String>,
    sha256: Option<String>,
    mirrors: Option<Vec<String>>,
    max_files: usize,
) -> Result<Vec<FileRequest>, ValidationError> {
    let given = [url.is_some(), files.is_some(), url_template.is_some()];
    match given.into_iter().filter(|&g| g).count() {
        0 => return Err(ValidationError::MissingSource),
        1 => {}
        _ => return Err(ValidationError::AmbiguousSource),
    }
    if let Some(url) = url {
        return Ok(vec![FileRequest {
            url,
            path: None,
            sha256,
            mirrors,
            headers: None,
        }]);
    }
    if mirrors.is_some() {
        return Err(ValidationError::MirrorsWithFiles);
    }
    if sha256.is_some() {
        return Err(ValidationError::Sha256WithFiles);
    }
    if let Some(template) = url_template {
        if template.len() > MAX_URL_BYTES {
            return Err(ValidationError::InvalidUrl {
                url: template.chars().take(200).collect(),
                reason: "longer than 8192 bytes".into(),
            });
        }
        let urls = template::expand(&template, max_files)?;
        return Ok(urls
            .into_iter()
            .map(|url| FileRequest {
                url,
                path: None,
                sha256: None,
                mirrors: None,
                headers: None,
            })
            .collect());
    }
    Ok(files.unwrap_or_default())
}

fn plan_files(
    root: &DownloadRoot,
    dest: &str,
    dest_is_dir: bool,
    sources: Vec<FileRequest>,
) -> Result<Vec<NewFile>, ValidationError> {
    let mut seen = HashSet::new();
    // The job's files mostly share a directory: it is checked once for all.
    let mut confined = paths::Confined::default();
    let mut files = Vec::with_capacity(sources.len());
    for source in sources {
        let url = parse_url(&source.url)?;
        let sha256 = match source.sha256 {
            Some(s) => Some(Sha256::parse(&s).ok_or(ValidationError::Sha256(s))?),
            None => None,
        };
        let auto_name = dest_is_dir && source.path.is_none();
        let path = if !dest_is_dir {
            dest.to_owned()
        } else {
            let name = match source.path {
                Some(p) => relative_below(root, &p)?,
                None => paths::name_from_url(&url),
            };
            if dest.is_empty() {
                name
            } else {
                format!("{dest}/{name}")
            }
        };
        if paths::is_partial_name(&path) {
            return Err(PathError::PartialName(path).into());
        }
        root.confine_in(&path, &mut confined)?;
        if !seen.insert(path.clone()) {
            return Err(ValidationError::DuplicatePath(path));
        }
        let mirrors = source
            .mirrors
            .unwrap_or_default()
            .iter()
            .map(|m| parse_url(m))
            .collect::<Result<Vec<_>, _>>()?;
        if mirrors.len() > MAX_MIRRORS {
            return Err(ValidationError::Limit("at most 16 mirrors per file"));
        }
        let headers = parse_headers(source.headers.unwrap_or_default())?;
        files.push(NewFile {
            id: FileId::new(),
            url,
            path,
            sha256,
            mirrors,
            auto_name,
            headers,
        });
    }
    Ok(files)
}

/// A `files[].path`: relative, inside the job's directory, naming a file.
fn relative_below(root: &DownloadRoot, path: &str) -> Result<String, ValidationError> {
    if path.starts_with('/') {
        return Err(PathError::EscapesRoot(path.to_owned()).into());
    }
    let parts = root.relative_components(path)?;
    if parts.is_empty() {
        return Err(PathError::Invalid(path.to_owned()).into());
    }
    Ok(parts.join("/"))
}

/// Accepts absolute http and https URLs with a host.
pub fn parse_url(raw: &str) -> Result<url::Url, ValidationError> {
    let invalid = |reason: &str| ValidationError::InvalidUrl {
        url: raw.chars().take(200).collect(),
        reason: reason.to_owned(),
    };
    if raw.len() > MAX_URL_BYTES {
        return Err(invalid("longer than 8192 bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(ValidationError::UnsupportedScheme(other.to_owned())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    Ok(url)
}

/// A `callback_url`: the same rules as a download's URL, reported as the callback's fault.
fn parse_callback_url(raw: &str) -> Result<url::Url, ValidationError> {
    parse_url(raw).map_err(|err| match err {
        // The URL itself is not echoed: its query may carry the receiver's token.
        ValidationError::UnsupportedScheme(scheme) => ValidationError::CallbackUrl(format!(
            "scheme {scheme:?} is not supported; only http and https are"
        )),
        ValidationError::InvalidUrl { reason, .. } => {
            ValidationError::CallbackUrl(format!("not a valid URL: {reason}"))
        }
        other => other,
    })
}

/// The largest byte count or rate a limit may be: the store keeps them as SQLite integers
/// (signed 64-bit), and the OpenAPI document says `int64`.
pub const MAX_LIMIT: u64 = i64::MAX as u64;

/// The ranges a job may set its limits in.
pub fn check_limits(limits: &JobLimits) -> Result<(), ValidationError> {
    if limits
        .max_connections
        .is_some_and(|n| !(1..=1024).contains(&n))
    {
        return Err(ValidationError::Limit(
            "max_connections must be between 1 and 1024",
        ));
    }
    if limits
        .min_segment_size
        .is_some_and(|n| !(65_536..=MAX_LIMIT).contains(&n))
    {
        return Err(ValidationError::Limit(
            "min_segment_size must be between 65536 and 2^63-1",
        ));
    }
    if limits
        .max_bytes_per_second
        .is_some_and(|n| !(1..=MAX_LIMIT).contains(&n))
    {
        return Err(ValidationError::Limit(
            "max_bytes_per_second must be between 1 and 2^63-1 (omit it for no limit)",
        ));
    }
    Ok(())
}

/// The token travels as `Authorization: Bearer <token>`: it must fit in a header.
fn check_access_token(token: &str) -> Result<(), ValidationError> {
    let fits =
        !token.trim().is_empty() && http::HeaderValue::from_str(&format!("Bearer {token}")).is_ok();
    if fits {
        return Ok(());
    }
    // The value is deliberately not echoed: it is a secret.
    Err(ValidationError::Header {
        name: "access_token".into(),
        reason: "the token is empty or has characters a header cannot carry".into(),
    })
}

fn parse_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ValidationError> {
    if headers.len() > MAX_HEADERS {
        return Err(ValidationError::Header {
            name: String::new(),
            reason: format!("at most {MAX_HEADERS} headers"),
        });
    }
    let mut parsed = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let bad = |reason: &str| ValidationError::Header {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let header = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("not a valid header name"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(bad("haul sets this header itself"));
        }
        // The value is deliberately not echoed: it may be a secret.
        http::HeaderValue::from_str(&value)
            .map_err(|_| bad("the value is not a valid header value"))?;
        parsed.push((header.as_str().to_owned(), value));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::paths::temp_root as root;

    /// The API's code for an error, spelled out here so these tests read like the contract.
    fn code(err: ValidationError) -> &'static str {
        match err {
            ValidationError::MissingSource | ValidationError::AmbiguousSource => "invalid-source",
            ValidationError::Template(TemplateError::Malformed { .. }) => "invalid-url-template",
            ValidationError::Template(TemplateError::TooLarge { .. }) => "invalid-file-count",
            ValidationError::Manifest(_) => "invalid-manifest",
            ValidationError::FileCount { .. } => "invalid-file-count",
            ValidationError::InvalidUrl { .. } => "invalid-url",
            ValidationError::UnsupportedScheme(_) => "unsupported-scheme",
            ValidationError::Path(PathError::EscapesRoot(_)) => "dest-escapes-root",
            ValidationError::Path(PathError::Invalid(_) | PathError::PartialName(_)) => {
                "invalid-path"
            }
            ValidationError::DuplicatePath(_) => "duplicate-path",
            ValidationError::Priority => "invalid-priority",
            ValidationError::Sha256(_) | ValidationError::Sha256WithFiles => "invalid-sha256",
            ValidationError::Header { .. } => "invalid-header",
            ValidationError::Description => "invalid-description",
            ValidationError::Limit(_) => "invalid-limit",
            ValidationError::CallbackUrl(_) => "invalid-callback-url",
            ValidationError::Proxy(_) => "invalid-proxy",
            ValidationError::MirrorsWithFiles => "invalid-source",
        }
    }

    fn single(url: &str) -> JobRequest {
        JobRequest {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_single_url_lands_in_the_root_named_after_the_url() {
        let (_d, root) = root();
        let job = single("https://h/x/model.bin").parse(&root, 10).unwrap();
        assert_eq!(job.files[0].path, "model.bin");
        assert_eq!(job.priority, Priority::DEFAULT);
        assert_eq!(job.on_conflict, OnConflict::Rename);
    }

    #[test]
    fn dest_is_a_file_path_unless_it_is_a_directory() {
        let (_d, root) = root();
        let mut req = single("https://h/x/model.bin");
        req.dest = Some("weights/m.bin".into());
        assert_eq!(
            req.clone().parse(&root, 10).unwrap().files[0].path,
            "weights/m.bin"
        );
        req.dest = Some("weights/".into());
        assert_eq!(
            req.clone().parse(&root, 10).unwrap().files[0].path,
            "weights/model.bin"
        );
        std::fs::create_dir(root.path().join("existing")).unwrap();
        req.dest = Some("existing".into());
        assert_eq!(
            req.parse(&root, 10).unwrap().files[0].path,
            "existing/model.bin"
        );
    }

    #[test]
    fn bad_sources_are_rejected_with_their_codes() {
        let (_d, root) = root();
        let code = |req: JobRequest| code(req.parse(&root, 2).unwrap_err());
        assert_eq!(code(JobRequest::default()), "invalid-source");
        assert_eq!(code(single("ftp://h/x")), "unsupported-scheme");
        assert_eq!(code(single("file:///etc/passwd")), "unsupported-scheme");
        assert_eq!(code(single("not a url")), "invalid-url");
        let mut req = single("http://h/x");
        req.dest = Some("../outside".into());
        assert_eq!(code(req), "dest-escapes-root");
        let mut req = single("http://h/x");
        req.sha256 = Some("abc".into());
        assert_eq!(code(req), "invalid-sha256");
        let mut req = single("http://h/x");
        req.priority = Some(5_000_000);
        assert_eq!(code(req), "invalid-priority");
        let file = |url: &str| FileRequest {
            url: url.into(),
            path: None,
            sha256: None,
            mirrors: None,
            headers: None,
        };
        let many = JobRequest {
            files: Some(vec![
                file("http://h/a"),
                file("http://h/b"),
                file("http://h/c"),
            ]),
            ..Default::default()
        };
        assert_eq!(code(many), "invalid-file-count");
        let dup = JobRequest {
            files: Some(vec![file("http://h/a"), file("http://g/a")]),
            ..Default::default()
        };
        assert_eq!(code(dup), "duplicate-path");
    }

    #[test]
    fn headers_are_checked_and_reserved_ones_refused() {
        let (_d, root) = root();
        let with = |name: &str, value: &str| {
            let mut req = single("http://h/x");
            req.headers = Some(BTreeMap::from([(name.to_owned(), value.to_owned())]));
            req.parse(&root, 1)
        };
        assert!(with("Cookie", "a=b").is_ok());
        for token in ["", "line\nbreak"] {
            let mut req = single("http://h/x");
            req.access_token = Some(token.into());
            assert_eq!(
                code(req.parse(&root, 1).unwrap_err()),
                "invalid-header",
                "{token:?}"
            );
        }
        assert_eq!(
            code(with("Range", "bytes=0-").unwrap_err()),
            "invalid-header"
        );
        assert_eq!(code(with("bad name", "x").unwrap_err()), "invalid-header");
        assert_eq!(
            code(with("X-A", "line\nbreak").unwrap_err()),
            "invalid-header"
        );
    }

    #[test]
    fn a_callback_url_must_be_http_or_https() {
        let (_d, root) = root();
        let with = |url: &str| {
            let mut req = single("http://h/x");
            req.callback_url = Some(url.into());
            req.parse(&root, 1)
        };
        let ok = with("https://hooks.example/haul?token=T").unwrap();
        assert_eq!(
            ok.callback_url.map(|u| u.to_string()),
            Some("https://hooks.example/haul?token=T".to_owned())
        );
        for bad in ["ftp://hooks.example/x", "not a url", "http://"] {
            let err = with(bad).unwrap_err();
            assert_eq!(code(err.clone()), "invalid-callback-url", "{bad}");
            assert!(err.to_string().starts_with("callback_url: "), "{err}");
        }
        assert!(
            with("ftp://h/x?token=SECRET")
                .unwrap_err()
                .to_string()
                .contains("\"ftp\"")
        );
        assert!(
            !with("ftp://h/x?token=SECRET")
                .unwrap_err()
                .to_string()
                .contains("SECRET")
        );
    }

    #[test]
    fn a_url_template_is_a_directory_of_its_expansions() {
        let (_d, root) = root();
        let req = JobRequest {
            url_template: Some("https://h/x/{1..3}.bin".into()),
            dest: Some("set".into()),
            ..Default::default()
        };
        let job = req.parse(&root, 3).unwrap();
        let paths: Vec<_> = job.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["set/1.bin", "set/2.bin", "set/3.bin"]);
        let too_many = JobRequest {
            url_template: Some("https://h/x/{1..4}.bin".into()),
            ..Default::default()
        };
        assert_eq!(
            code(too_many.parse(&root, 3).unwrap_err()),
            "invalid-file-count"
        );
        let both = JobRequest {
            url_template: Some("https://h/{a,b}".into()),
            url: Some("https://h/c".into()),
            ..Default::default()
        };
        assert_eq!(code(both.parse(&root, 3).unwrap_err()), "invalid-source");
    }

    #[test]
    fn file_paths_stay_below_dest() {
        let (_d, root) = root();
        let req = JobRequest {
            dest: Some("set".into()),
            files: Some(vec![FileRequest {
                url: "http://h/a".into(),
                path: Some("../../etc/passwd".into()),
                sha256: None,
                mirrors: None,
                headers: None,
            }]),
            ..Default::default()
        };
        assert_eq!(code(req.parse(&root, 5).unwrap_err()), "dest-escapes-root");
    }

    #[test]
    fn no_destination_may_be_named_like_a_partial_file() {
        let (_d, root) = root();
        let mut named = single("http://h/x");
        named.dest = Some("out/x.part".into());
        assert_eq!(code(named.parse(&root, 5).unwrap_err()), "invalid-path");
        let listed = JobRequest {
            files: Some(vec![FileRequest {
                url: "http://h/a".into(),
                path: Some("a.PART".into()),
                sha256: None,
                mirrors: None,
                headers: None,
            }]),
            ..Default::default()
        };
        assert_eq!(code(listed.parse(&root, 5).unwrap_err()), "invalid-path");
        // A name from the URL is altered instead: the file is still fetched.
        let from_url = JobRequest {
            dest: Some("dir/".into()),
            ..single("http://h/y.part")
        };
        assert_eq!(
            from_url.parse(&root, 5).unwrap().files[0].path,
            "dir/y.part_"
        );
    }
}
