//! Logging set-up and the redaction helpers that keep secrets out of logs.
//!
//! Secrets never logged: access tokens, `Authorization`/`Cookie` values (they travel in
//! sensitive `HeaderValue`s and are never formatted), URL user-info and query strings (signed
//! URLs carry credentials there): [`redact_url`] strips both.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,sqlx=warn,hyper=warn,reqwest=warn,tower_http=info";

/// Installs the global subscriber (once; later calls are ignored). Logs go to stderr.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::NONE);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A URL fit for logs and error messages: no user-info, and the query replaced by `?…`.
pub fn redact_url(url: &url::Url) -> String {
    let mut shown = without_userinfo(url);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    let mut text = shown.to_string();
    if had_query {
        text.push_str("?…");
    }
    text
}

/// The URL without user name and password (which are credentials).
pub fn without_userinfo(url: &url::Url) -> url::Url {
    let mut shown = url.clone();
    // Both fail only for URLs that cannot have user-info at all, which is what we want anyway.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown
}

/// Redacts every URL inside free text (error messages of HTTP libraries quote them).
pub fn redact_text(text: &str) -> String {
    text.split_inclusive(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .map(|word| {
            let trimmed =
                word.trim_end_matches(|c: char| c.is_whitespace() || c == '(' || c == ')');
            let tail = &word[trimmed.len()..];
            match url::Url::parse(trimmed) {
                Ok(url) if url.has_host() => format!("{}{tail}", redact_url(&url)),
                _ => word.to_owned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        let url = url::Url::parse("https://user:pw@h.example/a/b?sig=SECRET#frag").unwrap();
        let shown = redact_url(&url);
        assert_eq!(shown, "https://h.example/a/b?…");
        assert!(!shown.contains("SECRET") && !shown.contains("pw"));
    }

    #[test]
    fn urls_inside_messages_are_redacted() {
        let text = "error sending request for url (http://u:p@h/x?token=SECRET): refused";
        let shown = redact_text(text);
        assert!(
            !shown.contains("SECRET") && !shown.contains("u:p"),
            "{shown}"
        );
        assert!(shown.contains("http://h/x?…"));
    }
}
