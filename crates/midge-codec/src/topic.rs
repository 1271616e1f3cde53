//! Syntax of topic names and topic filters (MQTT 5.0 section 4.7, 4.8.2;
//! 3.1.1 section 4.7), shared by the decoder and the broker.
//!
//! This module only says whether a string is well formed. Matching a name
//! against a filter, `$`-topic rules and ACLs belong to the core.

use thiserror::Error;

/// Longest string the wire format can carry (two-byte length prefix).
const MAX_STRING_LEN: usize = u16::MAX as usize;

const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is not well formed. Display cites the clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TopicError {
    #[error("[MQTT-4.7.3-1] topic is empty")]
    Empty,
    #[error("[MQTT-4.7.3-3] topic is longer than 65535 bytes")]
    TooLong,
    #[error("[MQTT-4.7.3-2] topic contains U+0000")]
    NullCharacter,
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInName,
    #[error("[MQTT-4.7.1-1] '#' is not alone in the last level of the topic filter")]
    MisplacedMultiLevelWildcard,
    #[error("[MQTT-4.7.1-2] '+' is not alone in its level of the topic filter")]
    MisplacedSingleLevelWildcard,
    #[error("[MQTT-4.8.2-1] shared subscription group name is empty or contains '+', '#' or '/'")]
    InvalidShareName,
    #[error("[MQTT-4.8.2-2] shared subscription has no topic filter after the group name")]
    MissingSharedFilter,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_STRING_LEN {
        return Err(TopicError::TooLong);
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// A topic name as carried by PUBLISH (and Will Topic, Response Topic):
/// non-empty, no wildcard characters, no U+0000.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_STRING_LEN {
        return Err(TopicError::TooLong);
    }
    // One pass: this runs on every PUBLISH.
    for b in name.bytes() {
        match b {
            0 => return Err(TopicError::NullCharacter),
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            _ => {}
        }
    }
    Ok(())
}

/// A topic filter as carried by SUBSCRIBE and UNSUBSCRIBE, including the
/// shared form `$share/{group}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    if let Some(rest) = filter.strip_prefix(SHARE_PREFIX) {
        let (group, inner) = match rest.split_once('/') {
            Some(parts) => parts,
            None if rest.is_empty() || rest.contains(['+', '#']) => {
                return Err(TopicError::InvalidShareName)
            }
            None => return Err(TopicError::MissingSharedFilter),
        };
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::InvalidShareName);
        }
        if inner.is_empty() {
            return Err(TopicError::MissingSharedFilter);
        }
        return validate_levels(inner);
    }
    validate_levels(filter)
}

fn validate_levels(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits a shared subscription filter `$share/{group}/{filter}` into
/// `(group, filter)`. `None` when `filter` is not of the shared form; this
/// does not validate the parts (see [`validate_topic_filter`]).
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix(SHARE_PREFIX)?.split_once('/')
}

/// True when the filter contains a wildcard level (used by brokers that do
/// not offer wildcard subscriptions).
pub fn has_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("a", Ok(())),
            ("/", Ok(())),
            ("a/b/c", Ok(())),
            ("$SYS/broker", Ok(())),
            ("a//b", Ok(())),
            (" ", Ok(())),
            ("", Err(TopicError::Empty)),
            ("a/+/b", Err(TopicError::WildcardInName)),
            ("a/#", Err(TopicError::WildcardInName)),
            ("a+b", Err(TopicError::WildcardInName)),
            ("a\0b", Err(TopicError::NullCharacter)),
        ];
        for (name, want) in cases {
            assert_eq!(validate_topic_name(name), *want, "{name:?}");
        }
        assert_eq!(
            validate_topic_name(&"a".repeat(65536)),
            Err(TopicError::TooLong)
        );
        assert_eq!(validate_topic_name(&"a".repeat(65535)), Ok(()));
    }

    #[test]
    fn topic_filters() {
        use TopicError::*;
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("#", Ok(())),
            ("+", Ok(())),
            ("/", Ok(())),
            ("a/#", Ok(())),
            ("a/+/b", Ok(())),
            ("+/+", Ok(())),
            ("/+", Ok(())),
            ("+/#", Ok(())),
            ("a//#", Ok(())),
            ("sport/tennis/#", Ok(())),
            ("$share/g/a/#", Ok(())),
            ("$share/g/#", Ok(())),
            ("$share/g//", Ok(())),
            ("$shared/x", Ok(())),
            ("$share", Ok(())),
            ("", Err(Empty)),
            ("a#", Err(MisplacedMultiLevelWildcard)),
            ("#/a", Err(MisplacedMultiLevelWildcard)),
            ("a/#/b", Err(MisplacedMultiLevelWildcard)),
            ("##", Err(MisplacedMultiLevelWildcard)),
            ("a+", Err(MisplacedSingleLevelWildcard)),
            ("+a/b", Err(MisplacedSingleLevelWildcard)),
            ("a/b+/c", Err(MisplacedSingleLevelWildcard)),
            ("a\0", Err(NullCharacter)),
            ("$share/", Err(InvalidShareName)),
            ("$share//a", Err(InvalidShareName)),
            ("$share/g+/a", Err(InvalidShareName)),
            ("$share/#/a", Err(InvalidShareName)),
            ("$share/#", Err(InvalidShareName)),
            ("$share/g", Err(MissingSharedFilter)),
            ("$share/g/", Err(MissingSharedFilter)),
            ("$share/g/a#", Err(MisplacedMultiLevelWildcard)),
            // Found by fuzzing: the filter after the group is plain, even
            // when it looks like a shared one itself.
            ("$share/ha/$share/&sh", Ok(())),
            ("$share/g/$share/g", Ok(())),
        ];
        for (filter, want) in cases {
            assert_eq!(validate_topic_filter(filter), *want, "{filter:?}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(parse_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(parse_shared("$share/g"), None);
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$SHARE/g/a"), None);
    }

    #[test]
    fn error_messages_cite_the_clause() {
        assert_eq!(
            TopicError::WildcardInName.to_string(),
            "[MQTT-3.3.2-2] topic name contains a wildcard"
        );
    }
}
