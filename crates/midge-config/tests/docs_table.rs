//! Keeps `docs/configuration.md` true to [`midge_config::OPTIONS`].
//!
//! The reference table of that page sits between the lines
//! `<!-- options-table:begin -->` and `<!-- options-table:end -->`; each
//! option is one row whose first two cells are the name in backticks and its
//! status:
//!
//! ```text
//! | `acl_file` | supported | ... |
//! | `address` | not yet | ... |
//! | `ciphers` | refused | ... |
//! ```
//!
//! The test fails when an option of the table in `options.rs` is missing
//! from the page, listed twice, listed with another status (an option
//! flipped to supported must be documented as such), or when the page lists
//! an option that `options.rs` does not have.

use std::collections::BTreeMap;
use std::path::PathBuf;

use midge_config::{Support, OPTIONS};

const BEGIN: &str = "<!-- options-table:begin -->";
const END: &str = "<!-- options-table:end -->";

fn page() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The status word the page must show for `support`.
fn status(support: Support) -> &'static str {
    match support {
        Support::Supported => "supported",
        Support::NotYet => "not yet",
        Support::Refused(_) => "refused",
        // A new kind of support needs a word on the page first.
        _ => panic!("unknown Support value {support:?}: teach docs_table.rs its status word"),
    }
}

/// The rows of the reference table: name -> (status, line number).
fn table(text: &str) -> BTreeMap<String, (String, usize)> {
    let begin = text
        .lines()
        .position(|l| l.trim() == BEGIN)
        .unwrap_or_else(|| panic!("docs/configuration.md has no line {BEGIN}"));
    let end = text
        .lines()
        .position(|l| l.trim() == END)
        .unwrap_or_else(|| panic!("docs/configuration.md has no line {END}"));
    assert!(begin < end, "{BEGIN} must come before {END}");
    assert_eq!(
        text.lines().filter(|l| l.trim() == BEGIN).count(),
        1,
        "{BEGIN} must appear once"
    );

    let mut rows = BTreeMap::new();
    for (index, line) in text.lines().enumerate().take(end).skip(begin + 1) {
        let line_no = index + 1;
        let line = line.trim();
        if !line.starts_with('|') {
            assert!(
                line.is_empty(),
                "docs/configuration.md:{line_no}: only table rows may stand between the markers, got {line:?}"
            );
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        // The header and its separator.
        if cells[0] == "Option" || cells[0].chars().all(|c| c == '-' || c == ':') {
            continue;
        }
        let name = cells[0]
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .unwrap_or_else(|| {
                panic!(
                    "docs/configuration.md:{line_no}: the first cell must be an option name in backticks, got {:?}",
                    cells[0]
                )
            });
        let status = cells
            .get(1)
            .unwrap_or_else(|| panic!("docs/configuration.md:{line_no}: row without a status"));
        if let Some((_, first)) = rows.insert(name.to_owned(), (status.to_string(), line_no)) {
            panic!("docs/configuration.md:{line_no}: `{name}` is already listed at line {first}");
        }
    }
    rows
}

#[test]
fn every_option_is_documented_with_its_status() {
    let rows = table(&page());
    let mut problems = Vec::new();
    for option in OPTIONS {
        let want = status(option.support);
        match rows.get(option.name) {
            None => problems.push(format!(
                "`{}` ({want}) is missing from the table",
                option.name
            )),
            Some((got, line)) if got != want => problems.push(format!(
                "docs/configuration.md:{line}: `{}` is documented as \"{got}\" but options.rs says \"{want}\"",
                option.name
            )),
            Some(_) => {}
        }
    }
    for (name, (_, line)) in &rows {
        if !OPTIONS.iter().any(|o| o.name == name) {
            problems.push(format!(
                "docs/configuration.md:{line}: `{name}` is not an option in options.rs"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md disagrees with crates/midge-config/src/options.rs:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_table_parser_catches_mistakes() {
    let good = format!("{BEGIN}\n| Option | Status |\n|---|---|\n| `a` | supported | x |\n\n| `b` | not yet |\n{END}\n| `c` | refused |\n");
    let rows = table(&good);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows["a"].0, "supported");
    assert_eq!(rows["b"].0, "not yet");

    let twice = format!("{BEGIN}\n| `a` | supported |\n| `a` | supported |\n{END}\n");
    assert!(std::panic::catch_unwind(|| table(&twice)).is_err());
    let bare = format!("{BEGIN}\n| a | supported |\n{END}\n");
    assert!(std::panic::catch_unwind(|| table(&bare)).is_err());
    let prose = format!("{BEGIN}\nsome text\n{END}\n");
    assert!(std::panic::catch_unwind(|| table(&prose)).is_err());
}
