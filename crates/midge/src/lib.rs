//! What the midge binaries share with each other: for now, the process's
//! open-file limit and file table (`fd_table`), which the broker sets up
//! at start and `midge_bench` raises for its connections.

pub mod fd_table;
