//! Where and how the store lives, from a `mosquitto.conf`: the broker opens
//! it with these options, and `midge_db_import` writes to the same place.

use midge_config::{Config, PersistenceSync};
use midge_store::{StoreOptions, SyncPolicy};
use std::path::PathBuf;
use std::time::Duration;

/// `persistence_location` (default: the working directory),
/// `persistence_file` and `persistence_sync`.
pub fn from_config(config: &Config) -> StoreOptions {
    StoreOptions {
        dir: config
            .persistence_location
            .clone()
            .unwrap_or_else(|| PathBuf::from(".")),
        file_name: config.persistence_file.clone(),
        sync: match config.persistence_sync {
            PersistenceSync::Always => SyncPolicy::Always,
            PersistenceSync::IntervalMs(ms) => {
                SyncPolicy::Interval(Duration::from_millis(u64::from(ms)))
            }
            PersistenceSync::Never => SyncPolicy::Never,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn options(text: &str) -> StoreOptions {
        let config = midge_config::parse_str(text, Path::new("test.conf")).expect("valid");
        from_config(&config)
    }

    #[test]
    fn location_file_and_sync_come_from_the_configuration() {
        let o = options(
            "persistence true\npersistence_location /var/lib/midge/\npersistence_file m.db\npersistence_sync 10\n",
        );
        assert_eq!(o.dir, PathBuf::from("/var/lib/midge/"));
        assert_eq!(o.file_name, "m.db");
        assert!(matches!(o.sync, SyncPolicy::Interval(d) if d == Duration::from_millis(10)));
    }

    #[test]
    fn without_a_location_the_store_is_in_the_working_directory() {
        let o = options("persistence true\n");
        assert_eq!(o.dir, PathBuf::from("."));
        assert!(matches!(o.sync, SyncPolicy::Always));
    }
}
