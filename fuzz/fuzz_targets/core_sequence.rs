//! A stateful target for the broker core: the input is a configuration and
//! a sequence of actions (connections opened and lost, packets structured
//! or decoded from raw bytes, time passing, restarts from the store ops);
//! the driver panics when an invariant breaks. The driver lives in
//! `crates/midge-core/tests/fuzz_regressions.rs`, whose test replays
//! `fuzz/regressions/core_sequence/`: both run the same code.
//!
//! Bugs listed as open there (`KNOWN_OPEN`) are let through so a campaign
//! finds new ones; set `CORE_SEQUENCE_STRICT=1` to have them fail too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "../../crates/midge-core/tests/fuzz_regressions.rs"]
mod regressions;

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("CORE_SEQUENCE_STRICT").is_some())
}

fuzz_target!(|data: &[u8]| {
    if strict() {
        regressions::driver::run(data);
    } else {
        regressions::driver::run_tolerant(data);
    }
});
