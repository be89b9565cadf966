//! Where files land: every destination resolves inside the download root.
//!
//! Paths given by users (`dest`, `files[].path`) are checked and rejected when they would escape
//! the root; names derived from the server (the URL's last segment) are sanitised into one safe
//! path component instead, because the user did not choose them.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// Longest file name we produce, in bytes: below the usual 255-byte limit, leaving room for
/// ` (NNN)` from the rename policy and the `.part` suffix.
const MAX_NAME_BYTES: usize = 200;

/// The name used when the URL yields none.
pub const FALLBACK_NAME: &str = "download";

/// Why a user-supplied path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It contains `..`, or is absolute and outside the root, or an existing symlink leads out.
    #[error("{0:?} resolves outside the download root")]
    EscapesRoot(String),
    /// It contains NUL or other control characters, or is empty where a name is needed.
    #[error("{0:?} is not a usable path")]
    Invalid(String),
    /// Its name ends in `.part`, which names partial files: another download's.
    #[error("{0:?} ends in .part, which haul keeps for partial files")]
    PartialName(String),
}

/// Whether a file name ends in `.part` (any case): the name of a partial file, which no
/// download may take as its destination, lest it replace another download's `.part`.
pub fn is_partial_name(name: &str) -> bool {
    name.len() >= 5
        && name.is_char_boundary(name.len() - 5)
        && name[name.len() - 5..].eq_ignore_ascii_case(".part")
}

/// The configured download root, canonicalised once at start-up, and where partial files go.
#[derive(Debug, Clone)]
pub struct DownloadRoot(PathBuf, Option<PathBuf>);

/// Why an `incomplete_root` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IncompleteRootError {
    /// It cannot be created or read.
    #[error("cannot use {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// It is on another filesystem than the download root: a finished file could not be
    /// moved into place with an atomic rename (or hard link).
    #[error(
        "{incomplete} is on another filesystem than the download root {root}: partial files \
         must be renamed into place atomically, which only works within one filesystem"
    )]
    OtherFilesystem { incomplete: String, root: String },
    /// It lies inside the download root, or the root inside it: partial files would show
    /// among finished ones (or finished files among partial ones).
    #[error("{incomplete} and the download root {root} must not contain each other")]
    Nested { incomplete: String, root: String },
}

impl DownloadRoot {
    /// Creates the directory if needed and canonicalises it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        Ok(Self(path.canonicalize()?, None))
    }

    /// Keeps partial files under `incomplete` instead of beside their destinations, at the
    /// same relative path (`<incomplete>/<dest>.part`). It must be on the same filesystem as
    /// the root, so that a finished file still gets its name with one atomic rename.
    pub fn with_incomplete(self, incomplete: &Path) -> Result<Self, IncompleteRootError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| IncompleteRootError::Io {
            path: incomplete.display().to_string(),
            source,
        };
        std::fs::create_dir_all(incomplete).map_err(io)?;
        let canonical = incomplete.canonicalize().map_err(io)?;
        let (shown, root) = (
            canonical.display().to_string(),
            self.0.display().to_string(),
        );
        if canonical.starts_with(&self.0) || self.0.starts_with(&canonical) {
            return Err(IncompleteRootError::Nested {
                incomplete: shown,
                root,
            });
        }
        let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
        if device(&canonical).map_err(io)? != device(&self.0).map_err(io)? {
            return Err(IncompleteRootError::OtherFilesystem {
                incomplete: shown,
                root,
            });
        }
        Ok(Self(self.0, Some(canonical)))
    }

    /// The partial file of the root-relative destination `rel`: `NAME.part` beside it, or at
    /// the same relative path under the incomplete root.
    pub fn part(&self, rel: &str) -> PathBuf {
        let base = self.1.as_ref().unwrap_or(&self.0);
        let mut part = base.join(rel).into_os_string();
        part.push(".part");
        PathBuf::from(part)
    }

    /// Makes the directory of `rel`'s partial file under the incomplete root (the destination's
    /// own directory is made by the conflict policy), checking that nothing in it — a symlink
    /// planted there — leads out of the incomplete root.
    pub fn prepare_part_dir(&self, rel: &str) -> Result<(), PathError> {
        let Some(incomplete) = &self.1 else {
            return Ok(());
        };
        let part = self.part(rel);
        let Some(dir) = part.parent() else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|_| PathError::Invalid(rel.to_owned()))?;
        match real_path(dir) {
            Ok(real) if real.starts_with(incomplete) => Ok(()),
            _ => Err(PathError::EscapesRoot(rel.to_owned())),
        }
    }

    /// The incomplete root, when partial files have one.
    pub fn incomplete(&self) -> Option<&Path> {
        self.1.as_deref()
    }

    /// The canonical absolute path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The absolute path of a root-relative path (as stored), without touching the disk.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Turns a user-supplied path (relative, or absolute inside the root) into normalised
    /// root-relative components. Purely lexical.
    pub fn relative_components(&self, input: &str) -> Result<Vec<String>, PathError> {
        if input.chars().any(char::is_control) {
            return Err(PathError::Invalid(input.to_owned()));
        }
        let path = Path::new(input);
        let rest = if path.is_absolute() {
            path.strip_prefix(&self.0)
                .map_err(|_| PathError::EscapesRoot(input.to_owned()))?
        } else {
            path
        };
        let mut parts = Vec::new();
        for component in rest.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(PathError::EscapesRoot(input.to_owned()));
                }
            }
        }
        Ok(parts)
    }

    /// True when `rel` names an existing directory inside the root.
    pub fn is_dir(&self, rel: &str) -> bool {
        self.0.join(rel).is_dir()
    }

    /// Checks on disk that no existing part of `rel` (a symlink, say) leads outside the root,
    /// trusting the directories `seen` found inside the root earlier in the same batch of
    /// checks, so files in one directory check it once (a symlink as a file's last component
    /// is still looked for each time). When a file is written and named, its directory is
    /// checked again through its descriptor ([`open_dir_inside`]).
    pub fn confine_in(&self, rel: &str, seen: &mut Confined) -> Result<(), PathError> {
        let path = self.0.join(rel);
        // In a directory found missing in this batch, the file is missing too.
        let in_missing = path.parent().is_some_and(|dir| seen.missing.contains(dir));
        let last_is_link =
            !in_missing && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
        self.confine_known(rel, last_is_link, seen)
    }

    /// [`DownloadRoot::confine_in`] for a caller that has just looked at `rel` itself
    /// (`last_is_link`: it is a symlink), so it is not looked at again.
    pub fn confine_known(
        &self,
        rel: &str,
        last_is_link: bool,
        seen: &mut Confined,
    ) -> Result<(), PathError> {
        let mut probe = self.0.join(rel);
        // The last component can lead elsewhere only if it is a symlink: files are created with
        // `O_EXCL` and named by rename, and neither follows one.
        if probe != self.0 && !last_is_link {
            probe.pop();
        }
        if seen.existing.contains(&probe) || seen.missing.contains(&probe) {
            return Ok(());
        }
        let first = probe.clone();
        // Walk up to the deepest ancestor that exists; what does not exist yet cannot redirect.
        loop {
            match real_path(&probe) {
                Ok(real) if real.starts_with(&self.0) => {
                    if probe == first {
                        seen.existing.insert(first);
                    } else {
                        seen.missing.insert(first);
                    }
                    return Ok(());
                }
                Ok(_) => return Err(PathError::EscapesRoot(rel.to_owned())),
                Err(_) => {
                    if !probe.pop() {
                        return Err(PathError::EscapesRoot(rel.to_owned()));
                    }
                }
            }
        }
    }
}

/// Opens the directory `path` and checks, through the descriptor, where it really is: `None`
/// when it lies outside `base`. A name given relative to the descriptor lands in that
/// directory whatever happens to its path afterwards (a symlink planted on it), which a check
/// by path cannot promise. Not `O_PATH`: the descriptor is fsynced once names are given in it.
pub fn open_dir_inside(path: &Path, base: &Path) -> std::io::Result<Option<OwnedFd>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let real = real_path_of(&fd, path)?;
    Ok(real.starts_with(base).then_some(fd))
}

/// What one batch of checks found: directories that exist inside the root, and directories
/// that do not exist yet (their deepest existing ancestor is inside the root), so that a
/// thousand files bound for one directory check it once.
#[derive(Debug, Default)]
pub struct Confined {
    existing: std::collections::HashSet<PathBuf>,
    missing: std::collections::HashSet<PathBuf>,
}

impl Confined {
    /// Whether `dir` was found to exist inside the root in this batch.
    pub fn has_dir(&self, dir: &Path) -> bool {
        self.existing.contains(dir)
    }

    /// `dir` was created since it was found missing: the next check looks at it for real.
    pub fn created(&mut self, dir: &Path) {
        self.missing.remove(dir);
    }
}

/// The canonical path of an existing file: one `open` and one `readlink` of its descriptor in
/// `/proc`, where `canonicalize` reads every component.
fn real_path(path: &Path) -> std::io::Result<PathBuf> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    real_path_of(&fd, path)
}

/// Where the file open as `fd` (opened as `path`) really is.
fn real_path_of(fd: &OwnedFd, path: &Path) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(real) if real.is_absolute() => Ok(real),
        // No /proc (or an odd answer from it): the portable way.
        _ => path.canonicalize(),
    }
}

/// The file name a URL suggests: its last path segment, percent-decoded and sanitised.
pub fn name_from_url(url: &url::Url) -> String {
    let segment = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    sanitize_component(&decoded)
}

/// The file name a server suggests (`Content-Disposition`), as one safe path component.
/// Following RFC 6266 §4.3, folder information is never trusted: only what follows the last
/// `/` or `\\` counts (`../../etc/passwd` is `passwd`, `C:\\x\\a.exe` is `a.exe`). `None` when
/// nothing usable is left (`..`, `/`): the URL's name stands.
pub fn name_from_server(raw: &str) -> Option<String> {
    let last = raw
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())?;
    let name = sanitize_component(last);
    (name != FALLBACK_NAME || last.trim() == FALLBACK_NAME).then_some(name)
}

/// Reduces any string to one safe path component: no separators, no control characters (nor
/// the invisible ones that reorder text: bidi overrides), no leading dot (a server does not
/// make hidden files such as `.bashrc`), no leading or trailing spaces or trailing dots, no
/// Windows reserved names, at most [`MAX_NAME_BYTES`] keeping the extension, unicode kept;
/// [`FALLBACK_NAME`] when nothing is left.
pub fn sanitize_component(raw: &str) -> String {
    let replaced: String = raw
        .chars()
        .map(|c| match c {
            '/' | '\\' => '_',
            c if c.is_control() || is_invisible_format(c) => '_',
            c => c,
        })
        .collect();
    let trimmed = replaced.trim_matches(is_edge);
    if trimmed.is_empty() {
        return FALLBACK_NAME.to_owned();
    }
    // Cut first: a cut can end the name on a dot or a space (trimmed again, leaving a
    // character that is neither, as the name starts with one) or leave a reserved stem.
    let cut = truncate_keeping_extension(trimmed, MAX_NAME_BYTES);
    let cut = cut.trim_end_matches(is_edge);
    let name = if is_reserved(cut) {
        format!("_{cut}")
    } else {
        cut.to_owned()
    };
    // Never the name of a partial file, which may be another download's.
    if is_partial_name(&name) {
        return format!("{name}_");
    }
    name
}

/// What a name may neither start nor end with: dots (hidden files; Windows drops trailing
/// ones) and spaces of any kind.
fn is_edge(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

/// Bidirectional overrides and isolates, and zero-width characters: they make a name read
/// otherwise than it is (`evil\u{202e}txt.exe` shows as `evilexe.txt`).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Windows device names (`CON`, `PRN`, `AUX`, `NUL`, `COM1`–`COM9`, `LPT1`–`LPT9`, with any
/// extension): harmless on Linux, but a download folder is often shared with Windows machines
/// (Samba, a synced folder), where such a file cannot be opened.
fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit())
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => name.split_at(dot),
        _ => (name, ""),
    };
    let mut cut = max - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &stem[..cut], ext)
}

/// `name (n).ext`: the n-th alternative name for the rename conflict policy.
pub fn numbered_alternative(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// Whether `name` is `of (n).ext`, an alternative [`numbered_alternative`] gives for `of`.
pub fn is_numbered_alternative(name: &str, of: &str) -> bool {
    let (stem, ext) = match of.rfind('.') {
        Some(dot) if dot > 0 => of.split_at(dot),
        _ => (of, ""),
    };
    name.strip_prefix(stem)
        .and_then(|rest| rest.strip_prefix(" ("))
        .and_then(|rest| rest.strip_suffix(ext))
        .and_then(|rest| rest.strip_suffix(')'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A download root in a fresh temporary directory, for tests.
#[cfg(test)]
pub(crate) fn temp_root() -> (tempfile::TempDir, DownloadRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = DownloadRoot::open(dir.path()).unwrap();
    (dir, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use temp_root as root;

    fn confine(root: &DownloadRoot, rel: &str) -> Result<(), PathError> {
        root.confine_in(rel, &mut Confined::default())
    }

    #[test]
    fn user_paths_that_escape_are_rejected() {
        let (_dir, root) = root();
        for bad in ["../x", "a/../../x", "/etc/passwd", "a/../.."] {
            assert!(
                matches!(
                    root.relative_components(bad),
                    Err(PathError::EscapesRoot(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            root.relative_components("a\0b"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            root.relative_components("a\nb"),
            Err(PathError::Invalid(_))
        ));
        let inside = root.path().join("sub/file.bin");
        assert_eq!(
            root.relative_components(inside.to_str().unwrap()).unwrap(),
            vec!["sub", "file.bin"]
        );
        assert_eq!(root.relative_components("./a//b/").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn symlinks_out_of_the_root_are_caught() {
        let (_dir, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        assert!(confine(&root, "link/file").is_err());
        assert!(confine(&root, "plain/dir/file").is_ok());
        // A symlink as the last component counts only for where it leads.
        std::fs::create_dir(root.path().join("plain")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("plain/out")).unwrap();
        assert!(confine(&root, "plain/out").is_err());
        std::os::unix::fs::symlink(root.path().join("plain"), root.path().join("in")).unwrap();
        assert!(confine(&root, "in").is_ok() && confine(&root, "in/dir/file").is_ok());
        // A dangling one cannot redirect yet: its directory decides.
        std::os::unix::fs::symlink("/nonexistent/x", root.path().join("dangling")).unwrap();
        assert!(confine(&root, "dangling").is_ok());
        assert!(confine(&root, "").is_ok());
    }

    #[test]
    fn a_batch_checks_each_directory_once_and_each_last_component_always() {
        let (_dir, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("plain")).unwrap();
        let mut seen = Confined::default();
        assert!(root.confine_in("plain/a", &mut seen).is_ok());
        assert!(seen.has_dir(&root.path().join("plain")));
        // Found inside already, the directory is trusted; a symlink as a file's last
        // component is still caught.
        std::os::unix::fs::symlink(outside.path(), root.path().join("plain/b")).unwrap();
        assert!(root.confine_in("plain/b", &mut seen).is_err());
        // A directory not seen yet is checked: one leading out is caught.
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        assert!(root.confine_in("link/c", &mut seen).is_err());
        assert!(!seen.has_dir(&root.path().join("link")));
        // A directory that does not exist yet is not remembered as found.
        assert!(root.confine_in("new/d", &mut seen).is_ok());
        assert!(!seen.has_dir(&root.path().join("new")));
        // It is remembered as missing: its other files are not looked at again in this
        // batch (a symlink planted meanwhile is the next batch's, and the descriptor's, to
        // catch) ...
        std::os::unix::fs::symlink(outside.path(), root.path().join("new")).unwrap();
        assert!(root.confine_in("new/e", &mut seen).is_ok());
        assert!(root.confine_in("new/f", &mut Confined::default()).is_err());
        // ... until the batch says it created that directory: then it is looked at for real.
        seen.created(&root.path().join("new"));
        assert!(root.confine_in("new/g", &mut seen).is_err());
    }

    #[test]
    fn server_names_become_one_safe_component() {
        assert_eq!(sanitize_component("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize_component(".bashrc"), "bashrc");
        assert_eq!(sanitize_component(" . a b . "), "a b");
        assert_eq!(sanitize_component("evil\u{202e}txt.exe"), "evil_txt.exe");
        assert_eq!(sanitize_component(".."), FALLBACK_NAME);
        assert_eq!(sanitize_component("x.part"), "x.part_");
        assert_eq!(sanitize_component("X.PaRt"), "X.PaRt_");
        assert_eq!(sanitize_component("x.part1.rar"), "x.part1.rar");
        assert!(is_partial_name("a/b.part") && !is_partial_name("part") && !is_partial_name("é"));
        assert_eq!(sanitize_component(""), FALLBACK_NAME);
        assert_eq!(sanitize_component("a\0b\nc"), "a_b_c");
        assert_eq!(sanitize_component("CON.txt"), "_CON.txt");
        assert_eq!(sanitize_component("COM1"), "_COM1");
        assert_eq!(sanitize_component("résumé ✓.pdf"), "résumé ✓.pdf");
        let long = format!("{}.safetensors", "é".repeat(300));
        let cut = sanitize_component(&long);
        assert!(
            cut.len() <= MAX_NAME_BYTES && cut.ends_with(".safetensors"),
            "{cut}"
        );
    }

    #[test]
    fn server_names_lose_their_folders() {
        let name = |raw| name_from_server(raw).unwrap();
        assert_eq!(name("../../etc/passwd"), "passwd");
        assert_eq!(name("/etc/passwd"), "passwd");
        assert_eq!(name("C:\\Windows\\evil.exe"), "evil.exe");
        assert_eq!(name("dir/"), "dir");
        assert_eq!(name("a\0b.txt"), "a_b.txt");
        assert_eq!(name("line\nbreak.txt"), "line_break.txt");
        assert_eq!(name("NUL"), "_NUL");
        assert_eq!(name("lpt9.log"), "_lpt9.log");
        assert_eq!(name("€ rates.txt"), "€ rates.txt");
        assert_eq!(name("download"), FALLBACK_NAME);
        for nothing in ["/", "..", " . ", "../..", ""] {
            assert_eq!(name_from_server(nothing), None, "{nothing:?}");
        }
        let long = format!("{}.txt", "x".repeat(300));
        let cut = name(&long);
        assert_eq!(cut.len(), MAX_NAME_BYTES);
        assert!(cut.ends_with(".txt"));
        // A cut inside a multi-byte character moves back to its start.
        let long = format!("a{}.bin", "€".repeat(100));
        let cut = name(&long);
        assert!(
            cut.len() <= MAX_NAME_BYTES && cut.ends_with("€.bin"),
            "{cut}"
        );
    }

    #[test]
    fn names_come_from_the_last_url_segment() {
        let url = |s| url::Url::parse(s).unwrap();
        assert_eq!(
            name_from_url(&url("http://h/a/b/model%20v2.bin?x=1")),
            "model v2.bin"
        );
        assert_eq!(name_from_url(&url("http://h/")), FALLBACK_NAME);
        assert_eq!(name_from_url(&url("http://h/a/%2e%2e")), FALLBACK_NAME);
        assert_eq!(name_from_url(&url("http://h/a/..%2f..%2fx")), "_.._x");
    }

    #[test]
    fn alternatives_keep_the_extension() {
        assert_eq!(numbered_alternative("a.tar.gz", 2), "a.tar (2).gz");
        assert_eq!(numbered_alternative("README", 1), "README (1)");
        assert_eq!(numbered_alternative(".env", 1), ".env (1)");
        for (name, of) in [("a.tar (2).gz", "a.tar.gz"), ("README (12)", "README")] {
            assert!(is_numbered_alternative(name, of), "{name}");
        }
        for (name, of) in [("a (x).gz", "a.gz"), ("a ().gz", "a.gz"), ("a.gz", "a.gz")] {
            assert!(!is_numbered_alternative(name, of), "{name}");
        }
    }
}

#[cfg(test)]
mod cut_names {
    use super::*;

    /// Found by `a_sanitised_name_is_a_fixed_point`: cutting a long name could end it on a dot
    /// or spaces, and hide a reserved name behind what was cut off.
    #[test]
    fn a_cut_name_neither_ends_on_a_dot_or_space_nor_hides_a_reserved_name() {
        let dotted = format!("{}.{}", "a".repeat(199), "b".repeat(100));
        assert_eq!(sanitize_component(&dotted), "a".repeat(199));
        let spaced = format!("CON{}x", " ".repeat(250));
        assert_eq!(sanitize_component(&spaced), "_CON");
        let wide = format!("a\u{2003}.{}", "\u{3000}");
        assert_eq!(sanitize_component(&wide), "a");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any path a user may give is either refused or lands inside the root: its
        /// components are plain names, and writing them out again gives the same components,
        /// relative or absolute.
        #[test]
        fn an_accepted_path_stays_inside_the_root(
            input in "(/|\\.\\./|\\.\\.|\\./|\\.|//|[a-z]{1,3}|\\PC|\\n|\\x00){0,12}",
        ) {
            let (_dir, root) = temp_root();
            let Ok(parts) = root.relative_components(&input) else { return Ok(()) };
            for part in &parts {
                prop_assert!(!part.is_empty() && part != "." && part != "..", "{parts:?}");
                prop_assert!(!part.contains('/') && !part.contains('\0'), "{parts:?}");
            }
            let joined = parts.join("/");
            prop_assert!(root.join(&joined).starts_with(root.path()));
            prop_assert_eq!(root.relative_components(&joined).ok(), Some(parts.clone()));
            let absolute = root.join(&joined);
            let absolute = absolute.to_string_lossy();
            prop_assert_eq!(root.relative_components(&absolute).ok(), Some(parts));
        }

        /// Whatever a URL's last segment holds, its file name is one safe component.
        #[test]
        fn a_url_gives_one_safe_component(segment in "(%2[fF]|%00|%5[cC]|%2[eE]|\\.|[a-z]|\\PC){0,40}") {
            let Ok(url) = url::Url::parse(&format!("http://h/dir/{segment}")) else {
                return Ok(());
            };
            let name = name_from_url(&url);
            prop_assert!(!name.is_empty());
            prop_assert!(!name.contains(['/', '\\']) && !name.chars().any(char::is_control));
            prop_assert!(!name.starts_with('.') && !name.ends_with('.'), "{name:?}");
            prop_assert!(!name.ends_with(char::is_whitespace), "{name:?}");
            prop_assert!(!is_partial_name(&name), "{name:?}");
        }

        /// Sanitising is idempotent: a safe name stays what it is.
        #[test]
        fn a_sanitised_name_is_a_fixed_point(raw in "\\PC{0,260}|.{0,40}") {
            let once = sanitize_component(&raw);
            prop_assert_eq!(sanitize_component(&once), once);
        }
    }
}
