//! The URLs a file is fetched from: its own and its mirrors', each with where its redirects
//! lead now.
//!
//! A URL that redirects (a download page to a CDN, a release to a signed blob link) is
//! resolved once: later ranges go straight to the location it led to, which saves a round trip
//! per range. Should that location start refusing (403 or 410: a signed link that expired),
//! the URL is resolved again and the ranges go on from the new location.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::header::HeaderMap;

use super::http::request_target;

/// One URL serving the file.
#[derive(Debug)]
pub struct Source {
    /// The URL as given.
    pub url: url::Url,
    /// Its host, the key of the per-host connection budget.
    pub host: String,
    /// The credentials for `url` (sent only to its origin, wherever a redirect goes).
    pub secret: HeaderMap,
    /// Whether `location` holds anything: requests to a URL that never redirected look at this
    /// flag only, never at the lock.
    redirected: AtomicBool,
    /// Where `url`'s redirects led last.
    location: Mutex<Option<url::Url>>,
}

impl Source {
    /// A source for `url` with its credentials.
    pub fn new(url: url::Url, secret: HeaderMap) -> Self {
        Self {
            host: url.host_str().unwrap_or_default().to_owned(),
            url,
            secret,
            redirected: AtomicBool::new(false),
            location: Mutex::new(None),
        }
    }

    /// Where a request should start: the last location a redirect led to, if any.
    pub fn location(&self) -> Option<url::Url> {
        if !self.redirected.load(Ordering::Acquire) {
            return None;
        }
        self.location.lock().ok()?.clone()
    }

    /// Records where a request for `url` ended up (after its redirects).
    pub fn learn(&self, at: &url::Url) {
        if same_target(at, &self.url) {
            if self.redirected.load(Ordering::Acquire) {
                self.forget();
            }
            return;
        }
        if let Ok(mut location) = self.location.lock()
            && location.as_ref() != Some(at)
        {
            *location = Some(at.clone());
            self.redirected.store(true, Ordering::Release);
        }
    }

    /// Forgets the location: the next request resolves `url` again.
    pub fn forget(&self) {
        if let Ok(mut location) = self.location.lock() {
            *location = None;
            self.redirected.store(false, Ordering::Release);
        }
    }
}

/// Whether two URLs differ only in what never reaches the request line: the user and password
/// (reqwest sends them as a header and drops them from its response's URL, which must not read
/// as a redirect that leaves the credentials behind) and the fragment.
fn same_target(a: &url::Url, b: &url::Url) -> bool {
    request_target(a) == request_target(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_learnt_and_forgotten() {
        let url = url::Url::parse("http://h/signed").unwrap();
        let blob = url::Url::parse("http://h/blob?sig=1").unwrap();
        let source = Source::new(url.clone(), HeaderMap::new());
        assert_eq!(source.location(), None);
        source.learn(&url);
        assert_eq!(source.location(), None);
        source.learn(&blob);
        assert_eq!(source.location(), Some(blob));
        source.forget();
        assert_eq!(source.location(), None);
    }

    #[test]
    fn the_url_without_its_credentials_or_fragment_is_no_redirect() {
        let url = url::Url::parse("https://user:pw@h/f.bin#part").unwrap();
        let source = Source::new(url, HeaderMap::new());
        source.learn(&url::Url::parse("https://h/f.bin").unwrap());
        assert_eq!(source.location(), None, "the credentials stay with the URL");
        let elsewhere = url::Url::parse("https://h/g.bin").unwrap();
        source.learn(&elsewhere);
        assert_eq!(source.location(), Some(elsewhere));
    }
}
