//! Who may connect, publish, subscribe and read: the decisions the core
//! asks of the operator's password and ACL files (or any other source),
//! through one trait so the core never reads a file.

/// Authentication and authorisation checks. Called on the router's thread:
/// implementations must be quick (the ACL checks run per message when
/// [`AccessControl::has_acl`] is true).
pub trait AccessControl: Send + Sync {
    /// Whether user names and passwords are checked at all (a password file
    /// is configured). When false, any user name is accepted.
    fn checks_passwords(&self) -> bool;
    /// The password is right for this user. Should take the same time for
    /// an unknown user as for a wrong password.
    fn authenticate(&self, username: &str, password: Option<&[u8]>) -> bool;
    /// Whether topic access is checked at all (an ACL file is configured).
    fn has_acl(&self) -> bool;
    fn can_publish(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool;
    fn can_read(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool;
    /// Whether a subscription to `filter` can ever deliver anything.
    fn can_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool;
}
