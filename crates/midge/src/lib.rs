//! What the midge binaries share with each other: the process's open-file
//! limit and file table (`fd_table`), which the broker sets up at start and
//! `midge_bench` raises for its connections; and, for the broker and
//! `midge_db_import`, the core's settings (`broker_config`) and the store's
//! options (`store_options`) from a configuration.

pub mod broker_config;
pub mod fd_table;
pub mod store_options;
