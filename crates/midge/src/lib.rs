//! What the midge binaries share with each other: the process's open-file
//! limit and file table (`fd_table`), which the broker sets up at start and
//! `midge_bench` raises for its connections; and the store's options from a
//! configuration (`store_options`), for the broker and `midge_db_import`.

pub mod fd_table;
pub mod store_options;
