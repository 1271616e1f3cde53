//! The broker's password and ACL checks, read from Mosquitto's files
//! (`password_file`, `acl_file`) and handed to the core. Reread on SIGHUP.

use midge_auth::{Access, AclFile, PasswordFile};
use midge_config::Config;
use midge_core::AccessControl;
use midge_server::AccessHandle;
use std::sync::Arc;

struct FileAccess {
    passwords: Option<PasswordFile>,
    acl: Option<AclFile>,
}

impl AccessControl for FileAccess {
    fn checks_passwords(&self) -> bool {
        self.passwords.is_some()
    }

    fn authenticate(&self, username: &str, password: Option<&[u8]>) -> bool {
        match &self.passwords {
            // verify() costs the same for an unknown user as for a wrong
            // password; a missing password is checked as an empty one.
            Some(p) => p.verify(username, password.unwrap_or_default()),
            None => true,
        }
    }

    fn has_acl(&self) -> bool {
        self.acl.is_some()
    }

    fn can_publish(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|a| a.check(client_id, username, topic, Access::Write))
    }

    fn can_read(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|a| a.check(client_id, username, topic, Access::Read))
    }

    fn can_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|a| a.check_subscribe(client_id, username, filter))
    }
}

/// Loads the files the configuration names; `None` when it names none.
pub fn load(config: &Config) -> Result<Option<AccessHandle>, String> {
    let passwords = match &config.password_file {
        Some(path) => {
            Some(PasswordFile::load(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let acl = match &config.acl_file {
        Some(path) => Some(AclFile::load(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    if passwords.is_none() && acl.is_none() {
        return Ok(None);
    }
    Ok(Some(AccessHandle(Arc::new(FileAccess { passwords, acl }))))
}
