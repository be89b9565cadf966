//! Credential rules: a token or headers from the settings, attached to the URLs a rule matches,
//! so that clients need not know them.
//!
//! The first rule that matches a file's URL applies. A job's own credentials win: its
//! `access_token` replaces the rule's token and its headers replace the rule's headers of the
//! same name; the rest of the rule still applies. Whatever their source, the headers travel
//! with the job's own: only to the URL's origin (see `http::get_following`).

use std::borrow::Cow;
use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use crate::config::CredentialRule;
use crate::domain::request::RESERVED_HEADERS;

/// How a rule picks its URLs.
#[derive(Debug)]
enum Matcher {
    /// This host exactly (lowercase).
    Host(String),
    /// Any subdomain of this suffix (lowercase, with its leading dot).
    Suffix(String),
    /// The whole URL.
    Regex(regex::Regex),
}

impl Matcher {
    fn matches(&self, url: &url::Url) -> bool {
        let host = || url.host_str().unwrap_or_default();
        match self {
            Self::Host(name) => host().eq_ignore_ascii_case(name),
            Self::Suffix(suffix) => {
                let host = host();
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
            }
            Self::Regex(regex) => regex.is_match(url.as_str()),
        }
    }
}

#[derive(Debug)]
struct Rule {
    matcher: Matcher,
    /// Its token (as `Authorization`) and headers, marked sensitive.
    headers: HeaderMap,
}

/// The compiled rules. Cheap to clone; empty by default.
#[derive(Debug, Clone, Default)]
pub struct CredentialRules(Arc<[Rule]>);

impl CredentialRules {
    /// Compiles the rules of the settings; the error names what is wrong, never a secret.
    pub fn compile(rules: &[CredentialRule]) -> Result<Self, String> {
        rules
            .iter()
            .map(compile_rule)
            .collect::<Result<Vec<_>, _>>()
            .map(|rules| Self(rules.into()))
    }

    /// Whether there are no rules (the common case: nothing to do per file).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers to send to `url`: the job's own (`job`, its token included) over those of
    /// the first rule that matches.
    pub fn headers_for<'a>(&self, url: &url::Url, job: &'a HeaderMap) -> Cow<'a, HeaderMap> {
        let Some(rule) = self.0.iter().find(|r| r.matcher.matches(url)) else {
            return Cow::Borrowed(job);
        };
        let mut headers = job.clone();
        for (name, value) in &rule.headers {
            if !job.contains_key(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Cow::Owned(headers)
    }
}

fn compile_rule(rule: &CredentialRule) -> Result<Rule, String> {
    let matcher = match (&rule.host, &rule.url_regex) {
        (Some(host), None) => host_matcher(host)?,
        (None, Some(pattern)) => Matcher::Regex(
            regex::Regex::new(pattern).map_err(|e| format!("url_regex is not valid: {e}"))?,
        ),
        _ => return Err("give either `host` or `url_regex`".into()),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &rule.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header {name:?} is not a valid header name"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(format!("header {name:?}: haul sets this header itself"));
        }
        // The value is deliberately not echoed: it is a secret.
        let value = sensitive(value.expose())
            .ok_or_else(|| format!("header {name:?}: the value is not a valid header value"))?;
        headers.insert(header, value);
    }
    if let Some(token) = &rule.token {
        let value = sensitive(&format!("Bearer {}", token.expose()))
            .filter(|_| !token.expose().trim().is_empty())
            .ok_or("token is empty or has characters a header cannot carry")?;
        headers.insert(AUTHORIZATION, value);
    }
    if headers.is_empty() {
        return Err("give a `token` or `headers`".into());
    }
    Ok(Rule { matcher, headers })
}

fn host_matcher(host: &str) -> Result<Matcher, String> {
    let host = host.trim().to_ascii_lowercase();
    let (name, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host.as_str(), false),
    };
    if name.is_empty() || name.contains(['*', '/', ':', ' ']) {
        return Err(format!(
            "host {host:?} is not a host name or `*.` and a domain"
        ));
    }
    Ok(if wildcard {
        Matcher::Suffix(format!(".{name}"))
    } else {
        Matcher::Host(name.to_owned())
    })
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn rule(host: Option<&str>, regex: Option<&str>, token: &str) -> CredentialRule {
        CredentialRule {
            host: host.map(str::to_owned),
            url_regex: regex.map(str::to_owned),
            token: Some(Secret::new(token)),
            headers: [("x-api-key".to_owned(), Secret::new(format!("key-{token}")))].into(),
        }
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn hosts_suffixes_and_regexes_match_as_documented() {
        let rules = CredentialRules::compile(&[
            rule(Some("Exact.example"), None, "a"),
            rule(Some("*.cdn.example"), None, "b"),
            rule(None, Some(r"^https://files\.example/private/"), "c"),
        ])
        .unwrap();
        let none = HeaderMap::new();
        let auth = |u: &str| {
            rules
                .headers_for(&url(u), &none)
                .get(AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            auth("http://exact.example:8080/x").as_deref(),
            Some("Bearer a")
        );
        assert_eq!(auth("http://sub.exact.example/x"), None);
        assert_eq!(
            auth("https://a.b.cdn.example/x").as_deref(),
            Some("Bearer b")
        );
        assert_eq!(auth("https://cdn.example/x"), None);
        assert_eq!(auth("https://evilcdn.example/x"), None);
        assert_eq!(
            auth("https://files.example/private/1").as_deref(),
            Some("Bearer c")
        );
        assert_eq!(auth("https://files.example/public/1"), None);
        assert!(matches!(
            rules.headers_for(&url("http://other/"), &none),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_jobs_own_credentials_win_per_header() {
        let rules = CredentialRules::compile(&[rule(Some("h.example"), None, "rule")]).unwrap();
        let job = crate::fetch::request_headers(&[], Some("job")).unwrap();
        let headers = rules.headers_for(&url("http://h.example/"), &job);
        assert_eq!(headers[AUTHORIZATION], "Bearer job");
        assert_eq!(headers["x-api-key"], "key-rule");
        assert!(headers["x-api-key"].is_sensitive());
    }

    #[test]
    fn bad_rules_are_refused_without_echoing_secrets() {
        let mut both = rule(Some("h"), Some("h"), "t");
        assert!(CredentialRules::compile(&[both.clone()]).is_err());
        both.url_regex = Some("(".into());
        both.host = None;
        assert!(CredentialRules::compile(&[both]).is_err());
        let mut bad_value = rule(Some("h"), None, "t");
        bad_value.token = Some(Secret::new("line\nbreak-secret"));
        let err = CredentialRules::compile(&[bad_value]).unwrap_err();
        assert!(!err.contains("break-secret"));
        let mut reserved = rule(Some("h"), None, "t");
        reserved.headers = [("Range".to_owned(), Secret::new("bytes=0-"))].into();
        assert!(CredentialRules::compile(&[reserved]).is_err());
    }
}
