//! `AclFile::parse` never panics; `check` and `check_subscribe` never panic
//! and agree: on a filter without wildcards, subscribing is reading; a
//! refused filter has no readable topic among a few of its instances.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge_auth::{Access, AclFile};

const CLIENTS: &[(&str, Option<&str>)] = &[
    ("c", None),
    ("cid", Some("alice")),
    ("a/b", Some("u")),
    ("x+y", Some("bob")),
];

/// Topic names matched by `filter`: wildcards replaced by a few values.
fn instances(filter: &str) -> Vec<String> {
    ["x", "alice", "cid", "c"]
        .iter()
        .flat_map(|v| {
            let levels: Vec<&str> = filter
                .split('/')
                .map(|l| if l == "+" || l == "#" { *v } else { l })
                .collect();
            let t = levels.join("/");
            let mut out = vec![t.clone()];
            if let Some(parent) = filter.strip_suffix("/#") {
                out.push(parent.to_string());
                out.push(format!("{t}/{v}"));
            }
            out
        })
        .collect()
}

fn valid_filter(f: &str) -> bool {
    let levels: Vec<&str> = f.split('/').collect();
    !f.is_empty()
        && levels.iter().enumerate().all(|(i, l)| {
            (!l.contains('#') || (*l == "#" && i + 1 == levels.len()))
                && (!l.contains('+') || *l == "+")
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(acl) = AclFile::parse(text) else {
        return;
    };
    // The words of the file are the topics most likely to matter.
    let mut topics: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(' ').last())
        .take(16)
        .collect();
    topics.extend(["#", "+/+", "a/b", "$SYS/x", "$share/g/a"]);
    for &(id, user) in CLIENTS {
        for &t in &topics {
            let read = acl.check(id, user, t, Access::Read);
            let _ = acl.check(id, user, t, Access::Write);
            let sub = acl.check_subscribe(id, user, t);
            if !t.contains(['+', '#']) && !t.is_empty() && !t.starts_with("$share") {
                assert_eq!(sub, read, "{id:?} {user:?} {t:?}");
            }
            if !sub && valid_filter(t) && !t.starts_with("$share") {
                for i in instances(t) {
                    assert!(
                        !acl.check(id, user, &i, Access::Read),
                        "{t:?} refused but {i:?} readable for {id:?} {user:?}"
                    );
                }
            }
        }
    }
});
