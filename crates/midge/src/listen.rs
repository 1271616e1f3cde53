//! Binding the configured listeners: TCP (by address or name, or the IPv4
//! and IPv6 wildcards side by side), Unix sockets, `bind_interface`, and the
//! settings each listener carries into the server.

use midge_config::{Config, ListenAddress, ListenerProtocol, SocketDomain, TlsConfig};
use midge_server::tls::SharedTls;
use midge_server::{log, BoundListener, Listener, LogType, Logger};
use std::net::SocketAddr;
use tokio::net::{TcpListener, UnixListener};

/// Binds every listener; logs each as Mosquitto does ("Opening ipv4 listen
/// socket on port N."), with the real port when 0 was asked for.
pub async fn bind_all(config: &Config, log: &Logger) -> Result<Bound, String> {
    let mut out = Vec::new();
    let mut tls_handles = Vec::new();
    // `-p 0`: the first socket picks a free port, the others (the ::1 twin)
    // take the same one, so a client gets one port for both families.
    let mut picked: Option<u16> = None;
    for l in &config.listeners {
        let websockets = (l.protocol == ListenerProtocol::Websockets)
            .then_some(l.websockets_headers_size as usize);
        let tls = match &l.tls {
            Some(cfg) => {
                let settings = midge_server::tls::build(cfg)?;
                let shared = std::sync::Arc::new(std::sync::RwLock::new(settings));
                tls_handles.push((cfg.clone(), shared.clone()));
                Some(shared)
            }
            None => None,
        };
        let settings = |listener| BoundListener {
            listener,
            websockets,
            max_connections: l.max_connections,
            nodelay: config.set_tcp_nodelay,
            tls: tls.clone(),
            mount_point: l.mount_point.as_deref().map(std::sync::Arc::from),
        };
        match &l.address {
            ListenAddress::Unix { path } => {
                // A socket file left by a previous run would make bind fail.
                if std::fs::symlink_metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(path);
                }
                let listener = UnixListener::bind(path)
                    .map_err(|e| format!("cannot listen on Unix socket {}: {e}", path.display()))?;
                log!(
                    log,
                    LogType::NOTICE,
                    "Opening unix listen socket on path {}.",
                    path.display()
                );
                out.push(settings(Listener::Unix(listener)));
            }
            ListenAddress::Tcp {
                port,
                bind,
                socket_domain,
            } => {
                let addrs: Vec<SocketAddr> = match bind {
                    Some(host) => tokio::net::lookup_host((host.as_str(), *port))
                        .await
                        .map_err(|e| format!("cannot resolve listener address {host}: {e}"))?
                        .collect(),
                    None => vec![
                        SocketAddr::from(([0, 0, 0, 0], *port)),
                        SocketAddr::from(([0u16; 8], *port)),
                    ],
                };
                let before = out.len();
                for addr in addrs {
                    let wanted = match socket_domain {
                        Some(SocketDomain::Ipv4) => addr.is_ipv4(),
                        Some(SocketDomain::Ipv6) => addr.is_ipv6(),
                        None => true,
                    };
                    if !wanted {
                        continue;
                    }
                    let mut addr = addr;
                    if *port == 0 {
                        if let Some(p) = picked {
                            addr.set_port(p);
                        }
                    }
                    let bound = bind_tcp(addr, l.bind_interface.as_deref()).or_else(|e| {
                        if *port == 0 && addr.port() != 0 {
                            addr.set_port(0);
                            bind_tcp(addr, l.bind_interface.as_deref())
                        } else {
                            Err(e)
                        }
                    });
                    match bound {
                        Ok(listener) => {
                            let actual = listener.local_addr().map(|a| a.port()).unwrap_or(*port);
                            if *port == 0 && picked.is_none() {
                                picked = Some(actual);
                            }
                            let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
                            let kind = if websockets.is_some() {
                                " websockets"
                            } else {
                                ""
                            };
                            log!(
                                log,
                                LogType::NOTICE,
                                "Opening {}{} listen socket on port {}.",
                                family,
                                kind,
                                actual
                            );
                            out.push(settings(Listener::Tcp(listener)));
                        }
                        // IPv6 may be disabled on the host; IPv4 alone is enough.
                        Err(e) if addr.is_ipv6() && out.len() > before => {
                            log!(
                                log,
                                LogType::WARNING,
                                "Warning: cannot listen on {}: {}.",
                                addr,
                                e
                            );
                        }
                        Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
                    }
                }
            }
        }
    }
    if out.is_empty() {
        return Err("no listener could be opened".into());
    }
    Ok(Bound {
        listeners: out,
        tls: tls_handles,
    })
}

/// The bound sockets, and the TLS settings to renew on SIGHUP.
pub struct Bound {
    pub listeners: Vec<BoundListener>,
    pub tls: Vec<(TlsConfig, SharedTls)>,
}

/// Rereads every TLS listener's certificates and key (SIGHUP): new
/// connections get them; a file that fails keeps the old ones.
pub fn reload_tls(handles: &[(TlsConfig, SharedTls)], log: &Logger) {
    for (cfg, shared) in handles {
        match midge_server::tls::build(cfg) {
            Ok(settings) => {
                if let Ok(mut guard) = shared.write() {
                    *guard = settings;
                }
            }
            Err(e) => log!(
                log,
                LogType::ERROR,
                "Error: TLS reload failed, keeping the old certificates: {}",
                e
            ),
        }
    }
}

/// The accept queue asked for: the kernel caps it at its own maximum
/// (`net.core.somaxconn`, 4096 on current Linux). Mosquitto listens with
/// 100: in a reconnect storm (thousands of clients at once, as after a
/// restart) the connections past that are dropped at the SYN and retried
/// by the clients a second or more later.
const LISTEN_BACKLOG: i32 = i32::MAX;

fn bind_tcp(addr: SocketAddr, interface: Option<&str>) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // So 0.0.0.0 and :: can share a port.
        socket.set_only_v6(true)?;
    }
    if let Some(name) = interface {
        socket.bind_device(Some(name.as_bytes()))?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The listening socket's accept-queue limit, which Linux reports in
    /// `tcpi_sacked` of TCP_INFO for a socket in LISTEN.
    #[allow(unsafe_code)]
    fn accept_queue_limit(listener: &TcpListener) -> u32 {
        // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, which
        // lives for the whole call.
        let rc = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_sacked
    }

    #[tokio::test]
    async fn tcp_listener_takes_the_kernels_largest_accept_queue() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .expect("read net.core.somaxconn")
            .trim()
            .parse()
            .expect("a number");
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap(), None).expect("bind");
        assert_eq!(accept_queue_limit(&listener), somaxconn);
        assert!(somaxconn > 100, "more than Mosquitto's 100 on this kernel");
    }
}
