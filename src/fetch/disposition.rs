//! `Content-Disposition` (RFC 6266): the file name a server suggests.
//!
//! `filename*` (RFC 8187 extended value: `UTF-8''name%20with%20spaces`) wins over `filename`.
//! The result is the server's text, not yet a safe name: callers pass it through
//! `paths::sanitize_component`.

/// The suggested file name, if the header carries one.
pub fn filename(header: &str) -> Option<String> {
    let params = parameters(header);
    let extended = params
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("filename*"))
        .and_then(|(_, value)| decode_extended(value));
    extended.or_else(|| {
        params
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("filename"))
            .map(|(_, value)| value)
            .filter(|value| !value.is_empty())
    })
}

/// `name=value` pairs after the disposition type; quoted values are unquoted.
fn parameters(header: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = match header.split_once(';') {
        Some((_, rest)) => rest,
        None => return params,
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().to_owned();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            unquote(quoted)
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((name, value));
        rest = remainder;
    }
    params
}

/// Reads a quoted-string body (after the opening quote): the value and what follows it.
fn unquote(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (value, &text[i + 1..]),
            c => value.push(c),
        }
    }
    (value, "")
}

/// `charset'language'percent-encoded` → text. Only UTF-8 and ISO-8859-1 are defined.
fn decode_extended(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let (charset, _language, encoded) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    let text = if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()?
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        bytes.into_iter().map(char::from).collect()
    } else {
        return None;
    };
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted_names() {
        assert_eq!(
            filename("attachment; filename=model.bin").as_deref(),
            Some("model.bin")
        );
        assert_eq!(
            filename("attachment; filename=\"a b.txt\"").as_deref(),
            Some("a b.txt")
        );
        assert_eq!(
            filename("attachment; filename=\"q\\\"uote.txt\"; size=3").as_deref(),
            Some("q\"uote.txt")
        );
        assert_eq!(filename("inline; FILENAME=x").as_deref(), Some("x"));
        assert_eq!(filename("attachment"), None);
        assert_eq!(filename("attachment; filename=\"\""), None);
    }

    #[test]
    fn the_extended_name_wins_and_is_decoded() {
        let header =
            "attachment; filename=\"EURO rates.txt\"; filename*=UTF-8''%e2%82%ac%20rates.txt";
        assert_eq!(filename(header).as_deref(), Some("€ rates.txt"));
        assert_eq!(
            filename("attachment; filename*=iso-8859-1'en'%A3%20rates").as_deref(),
            Some("£ rates")
        );
        // An unknown charset or broken encoding falls back to the plain name.
        let header = "attachment; filename*=KOI8-R''%c1; filename=plain.txt";
        assert_eq!(filename(header).as_deref(), Some("plain.txt"));
        assert_eq!(
            filename("attachment; filename*=UTF-8''%ff%fe; filename=b").as_deref(),
            Some("b")
        );
    }

    #[test]
    fn hostile_names_come_back_raw_for_the_sanitiser() {
        let header = "attachment; filename=\"../../etc/passwd\"";
        assert_eq!(filename(header).as_deref(), Some("../../etc/passwd"));
        let sanitised = crate::domain::paths::sanitize_component(&filename(header).unwrap());
        assert!(!sanitised.contains('/'));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::domain::paths::{is_partial_name, name_from_server};
    use proptest::prelude::*;

    /// A header built from pieces servers send, hostile ones included.
    fn header() -> impl Strategy<Value = String> {
        let name = "(\\.\\./|/|\\\\|\\.|%2[fF]|%00|%e2%80%ae|[a-zA-Z0-9 ._-]|\\PC){0,24}";
        (
            "(attachment|inline|)",
            proptest::option::of(name),
            proptest::option::of(("(UTF-8|utf-8|iso-8859-1|KOI8-R|)", name)),
            "\\PC{0,8}",
        )
            .prop_map(|(kind, plain, extended, junk)| {
                let mut header = kind.to_owned();
                if let Some(plain) = plain {
                    header.push_str(&format!("; filename=\"{plain}\""));
                }
                if let Some((charset, value)) = extended {
                    header.push_str(&format!("; filename*={charset}''{value}"));
                }
                header + &junk
            })
    }

    proptest! {
        /// Whatever the header, parsing never panics, and the name that reaches the disk is
        /// one safe component: no separator, no control character, not `.` or `..` nor
        /// hidden, no trailing dot or space, not a partial file's name, at most 202 bytes.
        #[test]
        fn a_server_name_becomes_one_safe_component(
            header in prop_oneof![header(), "\\PC{0,60}", ".{0,60}"],
        ) {
            let Some(name) = filename(&header).and_then(|raw| name_from_server(&raw)) else {
                return Ok(());
            };
            prop_assert!(!name.is_empty());
            prop_assert!(!name.contains(['/', '\\']), "{name:?}");
            prop_assert!(!name.chars().any(char::is_control), "{name:?}");
            prop_assert!(!name.starts_with('.'), "{name:?}");
            prop_assert!(!name.ends_with('.'), "{name:?}");
            prop_assert!(!name.starts_with(char::is_whitespace), "{name:?}");
            prop_assert!(!name.ends_with(char::is_whitespace), "{name:?}");
            prop_assert!(!is_partial_name(&name), "{name:?}");
            prop_assert!(name.len() <= 202, "{} bytes", name.len());
        }
    }
}
