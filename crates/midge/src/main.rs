//! `midge`: the broker binary. (being written)
fn main() {}
