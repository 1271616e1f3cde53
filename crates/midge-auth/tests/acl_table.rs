//! ACL decisions as tables: (file, client id, username, topic, access,
//! expected), subscribe checks, and parse errors with their line numbers.
//! The cases marked "mosquitto" in `acl_vs_mosquitto.rs` are also checked
//! against the real broker.

use midge_auth::{Access, AclError, AclFile, AclLineError};

use Access::{Read as R, Write as W};

const MAIN: &str = "\
# anonymous clients
topic read public/#
topic readwrite anon/+/data
topic deny public/private/#
topic write with space/topic name
topic just-a-topic
topic read

user alice
topic readwrite alice/#
topic deny alice/secret
topic read $SYS/#
topic readwrite $SYS/broker/connection/+/state

user bob
topic write bob/out
topic read +/status

pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern deny clients/%c/locked
pattern write dev_%c/x

user   alice
topic read extra/alice
";

#[rustfmt::skip]
const CHECKS: &[(&str, Option<&str>, &str, Access, bool)] = &[
    // Anonymous section.
    ("c", None, "public/news", R, true),
    ("c", None, "public/news", W, false),
    ("c", None, "public", R, true),                    // `#` matches the parent
    ("c", None, "public/private/x", R, false),         // deny
    ("c", None, "public/private", R, false),           // deny `#` matches the parent
    ("c", None, "public/privateer", R, true),
    ("c", None, "anon/a/data", W, true),
    ("c", None, "anon//data", R, true),                // `+` matches an empty level
    ("c", None, "anon/a/b/data", W, false),
    ("c", None, "anon/a", R, false),
    ("c", None, "with space/topic name", W, true),
    ("c", None, "with space/topic name", R, false),
    ("c", None, "just-a-topic", R, true),              // no access word: readwrite
    ("c", None, "just-a-topic", W, true),
    ("c", None, "read", W, true),                      // `topic read`: the topic is "read"
    ("c", None, "alice/x", R, false),                  // not alice's rules
    // A user gets only their own section (merged from both `user alice`).
    ("c", Some("alice"), "alice/x", W, true),
    ("c", Some("alice"), "alice", R, true),
    ("c", Some("alice"), "alice/secret", R, false),
    ("c", Some("alice"), "alice/secret", W, false),
    ("c", Some("alice"), "alice/secret/x", R, true),   // deny is exact
    ("c", Some("alice"), "extra/alice", R, true),
    ("c", Some("alice"), "public/news", R, false),     // anonymous rules are not for users
    // `$` topics.
    ("c", Some("alice"), "$SYS/broker/uptime", R, true),
    ("c", Some("alice"), "$SYS/broker/uptime", W, false), // $SYS is never writable
    ("c", Some("alice"), "$SYS/broker/connection/b1/state", W, true),
    ("c", Some("bob"), "x/status", R, true),
    ("c", Some("bob"), "$SYS/status", R, false),       // `+` first level: not `$`
    ("c", Some("bob"), "$share/g/status", R, false),
    ("c", Some("bob"), "bob/out", W, true),
    ("c", Some("bob"), "bob/out", R, false),
    // Users without a section: patterns only.
    ("cid", Some("carol"), "clients/cid/x", W, true),
    ("cid", Some("carol"), "clients/cid", R, true),
    ("cid", Some("carol"), "clients/other/x", R, false),
    ("cid", Some("carol"), "clients/cid/locked", W, false), // deny pattern
    ("cid", Some("carol"), "users/carol/inbox", R, true),
    ("cid", Some("carol"), "users/carol/inbox", W, false),
    ("cid", Some("carol"), "users/dave/inbox", R, false),
    ("7", Some("carol"), "dev_7/x", W, true),          // %c inside a level
    ("7", Some("carol"), "dev_8/x", W, false),
    // Patterns apply to anonymous clients too, except %u ones.
    ("cid", None, "clients/cid/x", R, true),
    ("cid", None, "users//inbox", R, false),
    ("", None, "clients//x", R, true),
    // Users with a section also get patterns.
    ("cid", Some("alice"), "clients/cid/x", R, true),
    ("cid", Some("alice"), "clients/cid/locked", R, false),
    // Special characters: `+`/`#` in the username or id turn patterns off ...
    ("a+b", Some("carol"), "clients/a+b/x", R, false),
    ("cid", Some("c#"), "clients/cid/x", R, false),
    ("cid", Some("c+"), "users/c+/inbox", R, false),
    // ... but not the user's own rules.
    ("#", Some("alice"), "alice/x", W, true),
    // `/` in a value: a granting pattern does not match (stricter than
    // Mosquitto 2.0, which grants clients/c/d/x here) ...
    ("c/d", Some("carol"), "clients/c/d/x", R, false),
    ("c/d", Some("carol"), "clients/c/x", R, false),
    ("cid", Some("a/b"), "users/a/b/inbox", R, false),
    // ... a denying one still does, substituted.
    ("c/d", Some("alice"), "alice/x", W, true),
    // Invalid topic names are refused.
    ("c", None, "public/+", R, false),
    ("c", None, "public/#", R, false),
    ("c", None, "", R, false),
];

#[test]
fn checks() {
    let acl = AclFile::parse(MAIN).unwrap();
    for &(id, user, topic, access, expected) in CHECKS {
        assert_eq!(
            acl.check(id, user, topic, access),
            expected,
            "check({id:?}, {user:?}, {topic:?}, {access:?})"
        );
    }
}

#[test]
fn deny_precedence() {
    let acl = AclFile::parse(
        "topic readwrite x/#\n\
         topic deny x/y\n\
         user alice\n\
         topic readwrite a/#\n\
         topic deny a/b\n\
         topic readwrite a/b\n\
         pattern deny a/%u/blocked\n\
         pattern deny p/%c\n\
         pattern readwrite p/+\n",
    )
    .unwrap();
    // Deny beats grants in the same list, whatever the order of lines.
    assert!(!acl.check("c", Some("alice"), "a/b", R));
    assert!(!acl.check("c", None, "x/y", W));
    assert!(acl.check("c", None, "x/z", W));
    // A user's own grant beats a pattern deny (mosquitto 2.0.11 agrees).
    assert!(acl.check("c", Some("alice"), "a/alice/blocked", W));
    // A pattern deny beats a pattern grant.
    assert!(!acl.check("c", Some("bob"), "p/c", R));
    assert!(acl.check("c", Some("bob"), "p/d", R));
    // A deny pattern with a `/` in the value is substituted as Mosquitto does.
    let acl = AclFile::parse("pattern deny q/%c/x\npattern readwrite q/#\n").unwrap();
    assert!(!acl.check("a/b", None, "q/a/b/x", R));
    assert!(acl.check("a/b", None, "q/a/b/y", R));
}

#[test]
fn empty_files_refuse_everything() {
    for text in ["", "\n\n", "# only a comment\n   \n"] {
        let acl = AclFile::parse(text).unwrap();
        assert!(acl.is_empty());
        assert!(!acl.check("c", None, "a", R));
        assert!(!acl.check("c", Some("u"), "a", W));
        assert!(!acl.check_subscribe("c", None, "#"));
    }
}

#[rustfmt::skip]
const SUBSCRIBES: &[(&str, Option<&str>, &str, bool)] = &[
    ("c", None, "public/#", true),
    ("c", None, "public/+", true),
    ("c", None, "public/private/#", false),      // everything below is denied
    ("c", None, "public/private", false),
    ("c", None, "#", true),
    ("c", None, "+/+/data", true),
    ("c", None, "anon/+/+/data", false),
    ("c", None, "+/+/+/data", true),            // public/x/y/data
    ("c", None, "nothing/#", false),
    ("c", None, "with space/#", false),          // write only
    ("c", None, "$SYS/#", false),
    ("c", None, "$share/g/public/#", true),
    ("c", None, "$share/g/nothing", false),
    ("c", None, "$share/g", false),
    ("c", None, "public/#/x", false),            // invalid filter
    ("c", None, "", false),
    ("c", Some("alice"), "$SYS/#", true),
    ("c", Some("alice"), "#", true),
    ("c", Some("alice"), "alice/secret", false),
    ("c", Some("alice"), "alice/secret/#", true), // alice/secret/x is readable
    ("c", Some("alice"), "alice/+", true),
    ("c", Some("bob"), "+/status", true),
    ("c", Some("bob"), "$SYS/status", false),
    ("c", Some("bob"), "bob/out", false),
    ("cid", Some("carol"), "clients/cid/#", true),
    ("cid", Some("carol"), "clients/cid/locked", false),
    ("cid", Some("carol"), "clients/+/locked", false),
    ("cid", Some("carol"), "clients/+/x", true),
    ("cid", Some("carol"), "clients/other/#", false),
    ("cid", Some("carol"), "users/+/inbox", true),
    ("cid", Some("carol"), "users/#", true),
    ("cid", Some("carol"), "dev_cid/x", false),  // write only
    ("a+b", Some("carol"), "clients/#", false),
    ("c/d", Some("carol"), "clients/#", false),
];

#[test]
fn subscribe_checks() {
    let acl = AclFile::parse(MAIN).unwrap();
    for &(id, user, filter, expected) in SUBSCRIBES {
        assert_eq!(
            acl.check_subscribe(id, user, filter),
            expected,
            "check_subscribe({id:?}, {user:?}, {filter:?})"
        );
    }
}

#[test]
fn subscribe_sees_denies_that_cover_a_whole_filter() {
    let acl = AclFile::parse(
        "topic read a/#\n\
         topic deny a/+\n\
         topic deny a/+/+\n\
         topic deny a/+/+/#\n",
    )
    .unwrap();
    assert!(acl.check_subscribe("c", None, "a/#")); // "a" itself is readable
    assert!(acl.check_subscribe("c", None, "a"));
    assert!(!acl.check_subscribe("c", None, "a/+/#"));
    assert!(!acl.check_subscribe("c", None, "a/+/+/+/+/+/#"));
    assert!(!acl.check_subscribe("c", None, "a/x/y/z"));
    // A fixed-length deny leaves longer topics readable.
    let acl = AclFile::parse("topic read a/#\ntopic deny a/+/+\n").unwrap();
    assert!(acl.check_subscribe("c", None, "a/+/+/#"));
    assert!(!acl.check_subscribe("c", None, "a/+/+"));
    // A literal deny does not cover a wildcard level.
    let acl = AclFile::parse("topic read a/+\ntopic deny a/x\n").unwrap();
    assert!(acl.check_subscribe("c", None, "a/+"));
    assert!(!acl.check_subscribe("c", None, "a/x"));
}

/// `check_subscribe` agrees with `check` on filters without wildcards.
#[test]
fn subscribe_without_wildcards_is_a_read_check() {
    let acl = AclFile::parse(MAIN).unwrap();
    for &(id, user, topic, _, _) in CHECKS {
        if topic.is_empty() || topic.contains(['+', '#']) || topic.starts_with("$share") {
            continue;
        }
        assert_eq!(
            acl.check_subscribe(id, user, topic),
            acl.check(id, user, topic, R),
            "{id:?} {user:?} {topic:?}"
        );
    }
}

#[test]
fn parsing_details() {
    // CRLF line ends, spaces in topics and usernames, blanks around them.
    let acl = AclFile::parse(
        "user   bob smith  \r\n\
         topic  read   a b / c  \r\n\
         pattern %c\n",
    )
    .unwrap();
    assert!(acl.check("x", Some("bob smith"), "a b / c", R));
    assert!(!acl.check("x", Some("bob smith"), "a b / c", W));
    assert!(acl.check("x", Some("anyone"), "x", W)); // pattern with no access word
                                                     // A `topic` keyword alone with a wildcard topic.
    let acl = AclFile::parse("topic #\n").unwrap();
    assert!(acl.check("x", None, "any/thing", W));
    assert!(!acl.check("x", None, "$SYS/x", R)); // `#` does not match `$` topics
                                                 // `topic` lines mention %c literally: no substitution.
    let acl = AclFile::parse("topic read a/%c\n").unwrap();
    assert!(acl.check("x", None, "a/%c", R));
    assert!(!acl.check("x", None, "a/x", R));
    // A tab after the last word is trailing white space.
    assert!(AclFile::parse("topic read a\t\n").is_ok());
}

#[test]
fn parse_errors_name_the_line() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, AclLineError)] = &[
        ("topic\n", 1, AclLineError::MissingTopic("topic")),
        ("pattern   \n", 1, AclLineError::MissingTopic("pattern")),
        ("# c\n\ntopic foo bar\n", 3, AclLineError::InvalidAccess("foo".into())),
        ("topic READ a\n", 1, AclLineError::InvalidAccess("READ".into())),
        ("topic read a\nuser\n", 2, AclLineError::MissingUsername),
        ("user \t \n", 1, AclLineError::MissingUsername),
        ("topic read a/#/b\n", 1, AclLineError::InvalidTopic { topic: "a/#/b".into(), reason: "'#' must be the last level" }),
        ("topic read a+\n", 1, AclLineError::InvalidTopic { topic: "a+".into(), reason: "'+' must be a whole level" }),
        ("pattern write %c#\n", 1, AclLineError::InvalidTopic { topic: "%c#".into(), reason: "'#' must be a whole level" }),
        ("\ttopic a\n", 1, AclLineError::UnknownKeyword("\ttopic".into())),
        ("topic\tread\ta\n", 1, AclLineError::UnknownKeyword("topic\tread\ta".into())),
        ("  # indented comment\n", 1, AclLineError::UnknownKeyword("#".into())),
        ("Topic a\n", 1, AclLineError::UnknownKeyword("Topic".into())),
        ("topic a\n\n\nfoo\n", 4, AclLineError::UnknownKeyword("foo".into())),
        ("topic a\0b\n", 1, AclLineError::Nul),
    ];
    for (text, line, reason) in cases {
        match AclFile::parse(text) {
            Err(AclError::Line { line: l, reason: r }) => {
                assert_eq!((l, &r), (*line, reason), "{text:?}");
            }
            other => panic!("{text:?}: expected a line error, got {other:?}"),
        }
    }
    let long = format!("topic {}\n", "a".repeat(65536));
    assert_eq!(AclFile::parse(&long).unwrap_err().line(), Some(1));
    let err = AclFile::parse("topic read a\ntopic foo bar\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: invalid topic access type 'foo' (expected read, write, readwrite or deny)"
    );
}

#[test]
fn load_reports_io_and_utf8_errors() {
    let dir = std::env::temp_dir().join(format!("midge-acl-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("acl");
    std::fs::write(&path, b"topic read a\ntopic read \xff\n").unwrap();
    let err = AclFile::load(&path).unwrap_err();
    assert!(matches!(
        err,
        AclError::Line {
            line: 2,
            reason: AclLineError::NotUtf8
        }
    ));
    std::fs::write(&path, b"topic read a\n").unwrap();
    assert!(AclFile::load(&path).unwrap().check("c", None, "a", R));
    let missing = dir.join("missing");
    assert!(matches!(AclFile::load(&missing), Err(AclError::Io { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client sends the filter: a long one must not cost much more than its
/// length (witness topics use short fresh levels).
#[test]
fn long_filters_stay_cheap() {
    let acl = AclFile::parse("topic read #\ntopic deny a/+/b\npattern read %c/#\n").unwrap();
    let start = std::time::Instant::now();
    let filter = vec!["+"; 30000].join("/");
    assert!(acl.check_subscribe("c", None, &filter));
    let filter = format!("{}/#", "x".repeat(60000));
    assert!(acl.check_subscribe("c", None, &filter));
    assert!(acl.check_subscribe("c", Some("u"), "c/#"));
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}
