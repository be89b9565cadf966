//! URL templates: brace expressions expanded on the server into one URL per file.
//!
//! `{0001..1000}` counts (zero padding kept when a bound is written with a leading zero, to
//! the wider bound's width), `{0..100..10}` counts in steps, `{10..1}` counts down, and
//! `{a,b,c}` lists alternatives. Several expressions multiply, the first varying slowest, as
//! nested loops would. Braces do not nest and are always expressions (a URL cannot carry a
//! raw brace anyway). The number of URLs is known before any is built, so a template too
//! large for the cap is refused without allocating its expansion.

/// Bounds of a range have at most this many digits: every value then fits an `u64`.
const MAX_DIGITS: usize = 18;

/// Why a template does not expand. `column` counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is malformed at `column`.
    #[error("url_template, character {column}: {message}")]
    Malformed { column: usize, message: String },
    /// It would expand to more than `max` URLs (`count` is `None` when it overflows).
    #[error(
        "url_template expands to {} URLs; a job may have at most {max} files",
        count.map_or_else(|| "too many".to_owned(), |n| n.to_string())
    )]
    TooLarge { count: Option<u64>, max: usize },
}

/// One part of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    List(Vec<String>),
    Range(Range),
}

/// `{start..end..step}`: `step` is the distance between values, counted toward `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    step: u64,
    /// Digits every value is zero-padded to (0: no padding).
    width: usize,
}

impl Range {
    fn len(self) -> u64 {
        self.start.abs_diff(self.end) / self.step + 1
    }

    fn value(self, i: u64) -> String {
        let n = if self.start <= self.end {
            self.start + i * self.step
        } else {
            self.start - i * self.step
        };
        format!("{n:0width$}", width = self.width)
    }
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Self::Literal(_) => 1,
            Self::List(items) => items.len() as u64,
            Self::Range(range) => range.len(),
        }
    }

    fn value(&self, i: u64) -> String {
        match self {
            Self::Literal(text) => text.clone(),
            Self::List(items) => usize::try_from(i)
                .ok()
                .and_then(|i| items.get(i))
                .cloned()
                .unwrap_or_default(),
            Self::Range(range) => range.value(i),
        }
    }
}

/// Expands `template` into its URLs, in order; refuses more than `max`.
pub fn expand(template: &str, max: usize) -> Result<Vec<String>, TemplateError> {
    let parts = parse(template)?;
    let too_large = |count| TemplateError::TooLarge { count, max };
    let count = parts
        .iter()
        .try_fold(1u64, |n, part| n.checked_mul(part.len()))
        .ok_or(too_large(None))?;
    if count > max as u64 {
        return Err(too_large(Some(count)));
    }
    let mut urls = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for mut n in 0..count {
        // `n` written in the mixed radix of the parts' sizes, the last part varying fastest.
        let mut digits = vec![0; parts.len()];
        for (digit, part) in digits.iter_mut().zip(&parts).rev() {
            *digit = n % part.len();
            n /= part.len();
        }
        urls.push(parts.iter().zip(digits).map(|(p, i)| p.value(i)).collect());
    }
    Ok(urls)
}

/// Splits the template into literals and brace expressions.
fn parse(template: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars().enumerate();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' => {
                let mut body = String::new();
                loop {
                    match chars.next() {
                        Some((_, '}')) => break,
                        Some((inner, '{')) => {
                            return Err(malformed(inner, "braces do not nest"));
                        }
                        Some((_, c)) => body.push(c),
                        None => return Err(malformed(at, "this `{` is never closed")),
                    }
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(expression(&body, at)?);
            }
            '}' => return Err(malformed(at, "this `}` closes nothing")),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// The expression between the braces that open at `at` (0-based).
fn expression(body: &str, at: usize) -> Result<Part, TemplateError> {
    if body.contains("..") {
        return range(body, at).map(Part::Range);
    }
    if body.is_empty() {
        return Err(malformed(at, "`{}` is an empty list"));
    }
    Ok(Part::List(body.split(',').map(str::to_owned).collect()))
}

fn range(body: &str, at: usize) -> Result<Range, TemplateError> {
    let bounds: Vec<&str> = body.split("..").collect();
    let [start, end, step @ ..] = bounds.as_slice() else {
        return Err(malformed(
            at,
            "a range is `{start..end}` or `{start..end..step}`",
        ));
    };
    if step.len() > 1 {
        return Err(malformed(
            at,
            "a range is `{start..end}` or `{start..end..step}`",
        ));
    }
    let number = |text: &str, what: &str| -> Result<u64, TemplateError> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if !digits {
            let message = format!("the range's {what} {text:?} is not a non-negative integer");
            return Err(malformed(at, &message));
        }
        if text.len() > MAX_DIGITS {
            let message = format!("the range's {what} has more than {MAX_DIGITS} digits");
            return Err(malformed(at, &message));
        }
        text.parse()
            .map_err(|_| malformed(at, &format!("the range's {what} {text:?} is not a number")))
    };
    let step = match step.first() {
        Some(text) => number(text, "step")?,
        None => 1,
    };
    if step == 0 {
        return Err(malformed(at, "a range's step must be at least 1"));
    }
    let padded = |text: &&str| text.len() > 1 && text.starts_with('0');
    let width = if padded(start) || padded(end) {
        start.len().max(end.len())
    } else {
        0
    };
    Ok(Range {
        start: number(start, "start")?,
        end: number(end, "end")?,
        step,
        width,
    })
}

fn malformed(at: usize, message: &str) -> TemplateError {
    TemplateError::Malformed {
        column: at + 1,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(template: &str) -> Vec<String> {
        expand(template, 100_000).unwrap()
    }

    fn column(template: &str) -> (usize, String) {
        match expand(template, 100_000).unwrap_err() {
            TemplateError::Malformed { column, message } => (column, message),
            other => panic!("{template}: {other}"),
        }
    }

    #[test]
    fn a_template_without_braces_is_itself() {
        assert_eq!(ok("http://h/a.bin"), ["http://h/a.bin"]);
    }

    #[test]
    fn ranges_keep_the_padding_of_the_wider_bound() {
        let urls = ok("http://h/{0001..1000}.bin");
        assert_eq!(urls.len(), 1000);
        assert_eq!(urls[0], "http://h/0001.bin");
        assert_eq!(urls[999], "http://h/1000.bin");
        assert_eq!(ok("{01..100}")[..2], ["001", "002"]);
        assert_eq!(ok("{1..10}")[..2], ["1", "2"]);
        assert_eq!(ok("{0..2}"), ["0", "1", "2"]);
        assert_eq!(ok("{8..010}"), ["008", "009", "010"]);
    }

    #[test]
    fn steps_stop_at_or_before_the_end() {
        assert_eq!(ok("{0..100..10}").len(), 11);
        assert_eq!(ok("{0..100..10}")[10], "100");
        assert_eq!(ok("{1..10..4}"), ["1", "5", "9"]);
        assert_eq!(ok("{5..5..3}"), ["5"]);
    }

    #[test]
    fn descending_ranges_count_down() {
        assert_eq!(ok("{3..1}"), ["3", "2", "1"]);
        assert_eq!(ok("{10..00..5}"), ["10", "05", "00"]);
    }

    #[test]
    fn lists_and_products_expand_in_order_the_first_varying_slowest() {
        assert_eq!(ok("x{a,b}y"), ["xay", "xby"]);
        assert_eq!(
            ok("{a,b}/{1..3}.{c,d}"),
            [
                "a/1.c", "a/1.d", "a/2.c", "a/2.d", "a/3.c", "a/3.d", "b/1.c", "b/1.d", "b/2.c",
                "b/2.d", "b/3.c", "b/3.d"
            ]
        );
        assert_eq!(ok("f{,.sig}"), ["f", "f.sig"]);
        assert_eq!(ok("{only}"), ["only"]);
    }

    #[test]
    fn malformed_templates_say_what_and_where() {
        assert_eq!(column("http://h/{1..3").0, 10);
        assert!(column("http://h/{1..3").1.contains("never closed"));
        assert_eq!(column("ab}").0, 3);
        assert!(column("{a{b}}").1.contains("nest"));
        assert_eq!(column("x{a..9}").0, 2);
        assert!(column("x{a..9}").1.contains("\"a\""));
        assert!(column("{1..2..0}").1.contains("step"));
        assert!(column("{1..2..x}").1.contains("step"));
        assert!(column("{1..2..3..4}").1.contains("range is"));
        assert!(column("{-1..2}").1.contains("non-negative"));
        assert!(column("{}").1.contains("empty list"));
        assert!(column("{1..}").1.contains("end"));
        assert!(column("{1234567890123456789..1}").1.contains("digits"));
    }

    #[test]
    fn the_cap_is_checked_before_expanding() {
        assert_eq!(expand("{1..10}", 10).unwrap().len(), 10);
        assert_eq!(
            expand("{1..11}", 10).unwrap_err(),
            TemplateError::TooLarge {
                count: Some(11),
                max: 10
            }
        );
        // 10^18 squared overflows: refused without counting, let alone expanding.
        let huge = "{0..999999999999999999}{0..999999999999999999}";
        assert_eq!(
            expand(huge, 10).unwrap_err(),
            TemplateError::TooLarge {
                count: None,
                max: 10
            }
        );
        assert_eq!(
            expand("{1..1000}{1..1000}", 999_999).unwrap_err(),
            TemplateError::TooLarge {
                count: Some(1_000_000),
                max: 999_999
            }
        );
    }

    #[test]
    fn every_count_matches_its_expansion() {
        // Property-style: for many small ranges and steps, the expansion has the predicted
        // length, starts at `start`, never passes `end`, and keeps one width when padded.
        for start in 0..12u64 {
            for end in 0..12u64 {
                for step in 1..5u64 {
                    let urls = ok(&format!("{{{start:02}..{end}..{step}}}"));
                    let expected = start.abs_diff(end) / step + 1;
                    assert_eq!(urls.len() as u64, expected, "{start}..{end}..{step}");
                    assert_eq!(urls[0], format!("{start:02}"));
                    // `{10..` has no leading zero to keep: only smaller starts are padded.
                    let padded = start < 10;
                    assert!(urls.iter().all(|u| u.len() == 2 || !padded), "{urls:?}");
                    let last: u64 = urls[urls.len() - 1].parse().unwrap();
                    assert!(last.abs_diff(start) <= start.abs_diff(end));
                }
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A brace expression and the values it must give.
    fn expression() -> impl Strategy<Value = (String, Vec<String>)> {
        // Items with a dot but never two: `..` makes an expression a range.
        let list = proptest::collection::vec("[a-z0-9_-]{0,3}(\\.[a-z0-9]{1,2})?", 1..5)
            // `{}` is refused as an empty list; `{,}` is two empty items.
            .prop_filter("`{}` is no list", |items| items != &[String::new()])
            .prop_map(|items| (format!("{{{}}}", items.join(",")), items));
        let range = (0u64..200, 0u64..200, 1u64..7).prop_map(|(start, end, step)| {
            let values: Vec<String> = if start <= end {
                (start..=end)
                    .step_by(step as usize)
                    .map(|n| n.to_string())
                    .collect()
            } else {
                (end..=start)
                    .rev()
                    .step_by(step as usize)
                    .map(|n| n.to_string())
                    .collect()
            };
            let text = if step == 1 {
                format!("{{{start}..{end}}}")
            } else {
                format!("{{{start}..{end}..{step}}}")
            };
            (text, values)
        });
        prop_oneof![list, range]
    }

    proptest! {
        /// A template of literals and expressions expands to every combination, the first
        /// expression varying slowest: as many URLs as the product of the expressions' sizes.
        #[test]
        fn expansion_is_the_product_of_the_expressions(
            pieces in proptest::collection::vec(("[a-z/:.]{0,5}", expression()), 0..4),
            tail in "[a-z/.]{0,5}",
        ) {
            let template: String = pieces.iter().map(|(lit, (expr, _))| format!("{lit}{expr}"))
                .collect::<String>() + &tail;
            let mut expected = vec![String::new()];
            for (literal, (_, values)) in &pieces {
                expected = expected
                    .iter()
                    .flat_map(|prefix| values.iter().map(move |v| format!("{prefix}{literal}{v}")))
                    .collect();
            }
            let expected: Vec<String> = expected.into_iter().map(|url| url + &tail).collect();
            prop_assert_eq!(expand(&template, 1_000_000), Ok(expected));
        }

        /// Any text expands or is refused cleanly: never a panic, never more than the cap, and
        /// a malformed template's column points inside it.
        #[test]
        fn any_text_expands_within_the_cap_or_is_refused(
            template in "([{},.]|\\.\\.|[0-9]{1,20}|[a-z]|\\PC){0,30}",
            max in 0usize..5000,
        ) {
            match expand(&template, max) {
                Ok(urls) => prop_assert!(urls.len() <= max),
                Err(TemplateError::Malformed { column, .. }) => {
                    prop_assert!(column >= 1 && column <= template.chars().count());
                }
                Err(TemplateError::TooLarge { count, max: cap }) => {
                    prop_assert_eq!(cap, max);
                    prop_assert!(count.is_none_or(|n| n > max as u64));
                }
            }
        }
    }
}
