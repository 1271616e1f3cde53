//! Enhanced authentication (MQTT 5.0 §4.12): the interface an authentication
//! method implements, so the core runs the AUTH exchange without knowing the
//! method. The core ships no method; a CONNECT naming an unknown method is
//! refused with 0x8C Bad authentication method.

use bytes::Bytes;

/// One step of an exchange, as decided by the method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Authenticated; `data` goes back in CONNACK (or AUTH 0x00 on re-auth).
    Success { data: Option<Bytes> },
    /// Send AUTH 0x18 Continue authentication with `data`, wait for the answer.
    Continue { data: Option<Bytes> },
    /// Refused: CONNACK 0x87 Not authorized (or DISCONNECT on re-auth).
    Fail,
}

/// An authentication method such as SCRAM or Kerberos.
pub trait AuthMethod: Send + Sync {
    /// The Authentication Method name clients put in CONNECT.
    fn name(&self) -> &str;
    /// Starts an exchange with the Authentication Data of CONNECT (or of
    /// AUTH 0x19 Re-authenticate).
    fn begin(
        &self,
        client_id: &str,
        username: Option<&str>,
        data: Option<&[u8]>,
    ) -> (AuthStep, Box<dyn AuthExchange>);
}

/// The state of one exchange in progress.
pub trait AuthExchange: Send {
    /// The client answered with AUTH 0x18 carrying `data`.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}
