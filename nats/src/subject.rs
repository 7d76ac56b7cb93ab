//! Subjects: each stream's events go to one subject, `<prefix>.<category>.<stream id>`, with
//! the stream id (and category) encoded as a single token, reversibly.

use std::{fmt, sync::Arc};

use annals_core::RecordedEvent;

/// The longest subject the relay forms: the protocol's control line (`HPUB <subject>
/// <reply> <sizes>`) must fit in the server's 4 KiB limit.
pub const MAX_SUBJECT_BYTES: usize = 3_500;

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~'
}

/// Encodes any string as one subject token: ASCII letters, digits, `-`, `_` and `~` stay;
/// every other byte of its UTF-8 becomes `%XX`. Reversible with [`decode_token`].
///
/// ```
/// use annals_nats::{decode_token, encode_token};
///
/// assert_eq!(encode_token("account-42"), "account-42");
/// assert_eq!(encode_token("order.7 x"), "order%2E7%20x");
/// assert_eq!(decode_token(&encode_token("ünï.cøde >")).as_deref(), Some("ünï.cøde >"));
/// ```
pub fn encode_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a token made by [`encode_token`]; `None` for anything it could not have made.
pub fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = token.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if is_plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// A stream's category: its id up to the first `-` (`account-42` is in `account`), or the
/// whole id when it has none. `Repository` stream ids are `"{Aggregate::TYPE}-{id}"`.
pub fn category(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or(stream_id, |(c, _)| c)
}

/// Checks a subject for publishing: tokens separated by `.`, none empty, no whitespace or
/// wildcard, within [`MAX_SUBJECT_BYTES`].
pub(crate) fn check_subject(subject: &str) -> Result<(), String> {
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!(
            "subject of {} bytes is longer than {MAX_SUBJECT_BYTES}",
            subject.len()
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!("subject `{subject}` has an empty token"));
        }
        if token == "*" || token == ">" || token.contains(|c: char| c.is_whitespace()) {
            return Err(format!(
                "subject `{subject}` has a wildcard or whitespace in a token"
            ));
        }
    }
    Ok(())
}

/// A rule an application gives for an event's subject (below the relay's prefix).
pub type SubjectFn = Arc<dyn Fn(&RecordedEvent) -> String + Send + Sync>;

/// How the relay names an event's subject.
#[derive(Clone, Default)]
pub enum SubjectRule {
    /// `<prefix>.<category>.<stream id>`, both encoded with [`encode_token`].
    #[default]
    Category,
    /// `<prefix>.<what the function returns>`: it must give every event of a stream the
    /// same subject (consumers check order per subject), and a valid subject.
    Custom(SubjectFn),
}

impl fmt::Debug for SubjectRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectRule::Category => f.write_str("Category"),
            SubjectRule::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl SubjectRule {
    /// The subject of `event` under `prefix`.
    ///
    /// # Errors
    ///
    /// Why no valid subject can be formed.
    pub fn subject(&self, prefix: &str, event: &RecordedEvent) -> Result<String, String> {
        let subject = match self {
            SubjectRule::Category => format!(
                "{prefix}.{}.{}",
                encode_token(category(&event.stream_id)),
                encode_token(&event.stream_id)
            ),
            SubjectRule::Custom(rule) => format!("{prefix}.{}", rule(event)),
        };
        check_subject(&subject)?;
        Ok(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_valid() {
        for id in [
            "account-1",
            "a.b.c",
            "*",
            ">",
            "with space",
            "tab\there",
            "%41",
            "ünïcødé",
            "emoji-🦀",
            "",
            "~_-",
        ] {
            let token = encode_token(id);
            assert_eq!(decode_token(&token).as_deref(), Some(id), "{id:?}");
            if !id.is_empty() {
                check_subject(&format!("p.{token}")).expect(id);
            }
        }
        assert_eq!(decode_token("bad%zz"), None);
        assert_eq!(decode_token("has.dot"), None);
        assert_eq!(decode_token("%ff"), None, "not UTF-8");
    }

    #[test]
    fn categories_come_before_the_first_dash() {
        assert_eq!(category("account-42"), "account");
        assert_eq!(category("order-line-7"), "order");
        assert_eq!(category("standalone"), "standalone");
    }

    #[test]
    fn invalid_subjects_are_refused() {
        for bad in ["a..b", "a.*", "a.>", ".a", "a.", "a. b"] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
        assert!(check_subject(&format!("a.{}", "x".repeat(MAX_SUBJECT_BYTES))).is_err());
    }
}
