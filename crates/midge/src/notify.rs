//! systemd's notify protocol (sd_notify(3)) without libsystemd: datagrams
//! to `$NOTIFY_SOCKET`, which may be an abstract socket (`@name`). Without
//! the variable (not started by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub fn send(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            let _ = socket.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = socket.send_to(state.as_bytes(), &path);
    }
}

/// CLOCK_MONOTONIC in microseconds, for `RELOADING=1` (systemd 253+).
pub fn monotonic_usec() -> u64 {
    // std's Instant is CLOCK_MONOTONIC on Linux but hides the value; read
    // it from /proc/uptime's clock instead: close enough for systemd, which
    // only checks that it moves forward.
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|secs| (secs * 1_000_000.0) as u64)
        .unwrap_or(0)
}

/// Pings the watchdog at half the interval systemd asked for
/// (`WatchdogSec=` sets `$WATCHDOG_USEC`).
pub fn spawn_watchdog() {
    let Some(usec) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&u| u > 0)
    else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
        loop {
            tick.tick().await;
            send("WATCHDOG=1");
        }
    });
}
