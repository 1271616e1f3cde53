//! Topic syntax checks never panic and agree with each other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge_codec::{parse_shared, validate_topic_filter, validate_topic_name};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let name_ok = validate_topic_name(s).is_ok();
    let filter_ok = validate_topic_filter(s).is_ok();
    let shared = parse_shared(s);
    // A valid name has no wildcard, so it is a filter matching only itself;
    // except under `$share/`, where a filter must also name a group.
    if name_ok && !s.starts_with("$share/") {
        assert!(filter_ok, "valid topic name {s:?} is not a valid filter");
    }
    if let Some((group, filter)) = shared {
        assert!(s.starts_with("$share/"));
        assert!(!group.contains('/'));
        if filter_ok {
            assert!(!group.is_empty() && !group.contains(['+', '#']));
            // The inner filter is plain even when it starts with `$share/`.
            if !filter.starts_with("$share/") {
                assert!(validate_topic_filter(filter).is_ok());
            }
        }
    }
    if filter_ok && s.starts_with("$share/") {
        assert!(shared.is_some(), "valid shared filter {s:?} does not parse");
    }
});
