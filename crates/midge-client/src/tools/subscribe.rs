//! midge_sub: subscribe, print what arrives, and stop on `-C`, `-W`, `-E`,
//! `--retained-only`, SIGINT or SIGTERM with mosquitto_sub's exit codes
//! (0, and 27 on `-W`). A lost connection is re-established, as
//! libmosquitto's loop_forever does.

use std::time::Duration;

use bytes::Bytes;
use midge_codec::{Properties, ReasonCode, SubscriptionOptions};
use tokio::time::Instant;

use super::args::Config;
use super::clock::SystemClock;
use super::format::{print_message, Msg, PrintOpts};
use super::publish::runtime_failure;
use super::{connect_failure, connect_options, err_print, out_write, Rng};
use crate::client::{Client, Error, Event, Received};

/// SIGINT and SIGTERM, registered once so none is missed between polls.
pub(crate) struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    pub(crate) async fn recv(&mut self) {
        let int = async {
            match &mut self.int {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let term = async {
            match &mut self.term {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => {}
            _ = term => {}
        }
    }
}

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The reason code a signal or `-W` disconnects with: mosquitto_sub asks the
/// broker to publish the will (5.0).
const SIGNAL_REASON: ReasonCode = ReasonCode::DISCONNECT_WITH_WILL;

pub(crate) fn print_opts(cfg: &Config) -> PrintOpts {
    PrintOpts {
        format: cfg.format.clone(),
        verbose: cfg.verbose,
        eol: cfg.eol,
        pretty: cfg.pretty,
    }
}

/// Prints one message (after `--random-filter`), stdout and stderr.
pub(crate) fn print_received(cfg: &Config, opts: &PrintOpts, rec: &Received, rng: &mut Rng) {
    if cfg.random_filter < 10000 && rng.below(10000) >= u64::from(cfg.random_filter) {
        return;
    }
    let p = &rec.publish;
    let msg = Msg {
        topic: &p.topic,
        payload: &p.payload,
        qos: p.qos as u8,
        retain: p.retain,
        mid: p.packet_id.map_or(0, |i| i.get()),
        props: &p.properties,
        prop_order: &rec.prop_order,
    };
    let printed = print_message(opts, &msg, &SystemClock::now());
    for line in &printed.stderr {
        err_print(cfg, line);
    }
    out_write(&printed.stdout);
}

fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    // [MQTT-4.7.2-1]: wildcards at the first level do not match $ topics.
    if topic.starts_with('$') && (filter.starts_with('#') || filter.starts_with('+')) {
        return false;
    }
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

enum Flow {
    Continue,
    Exit(i32),
    Reconnect,
}

struct State {
    process: bool,
    count: u32,
    /// The `--remove-retained` publish to wait for before leaving.
    last_mid: Option<u16>,
    rng: Rng,
    opts: PrintOpts,
}

pub(super) async fn main(cfg: Config) -> i32 {
    if cfg.no_retain && cfg.retained_only {
        eprint!("\nError: Combining '-R' and '--retained-only' makes no sense.\n");
        return 1;
    }
    let opts = match connect_options(&cfg) {
        Ok(o) => o,
        Err(line) => {
            err_print(&cfg, &line);
            return 1;
        }
    };
    let deadline = cfg
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(u64::from(t)));
    let mut signals = Signals::new();
    let mut state = State {
        process: true,
        count: 0,
        last_mid: None,
        rng: Rng::seeded(),
        opts: print_opts(&cfg),
    };
    let mut connected_once = false;
    loop {
        let conn = tokio::select! {
            c = Client::connect(&opts) => c,
            // Like mosquitto_sub before its CONNACK: exit(-1).
            _ = sleep_until(deadline) => return 255,
            _ = signals.recv() => return 255,
        };
        let mut client = match conn {
            Ok((c, _)) => c,
            Err(e) => {
                if connected_once && !matches!(e, Error::Refused { .. }) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                let (line, code) = connect_failure(&e);
                err_print(&cfg, &line);
                return code;
            }
        };
        connected_once = true;
        match session(&cfg, &mut client, &mut state, deadline, &mut signals).await {
            Flow::Exit(code) => return code,
            Flow::Reconnect | Flow::Continue => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn session(
    cfg: &Config,
    client: &mut Client,
    st: &mut State,
    deadline: Option<Instant>,
    signals: &mut Signals,
) -> Flow {
    let v5 = cfg.protocol.is_v5();
    let pick = |p: &Properties| if v5 { p.clone() } else { Properties::default() };
    let filters: Vec<(String, SubscriptionOptions)> = cfg
        .topics
        .iter()
        .map(|t| {
            (
                t.clone(),
                SubscriptionOptions {
                    qos: cfg.qos,
                    no_local: false,
                    retain_as_published: cfg.retain_as_published,
                    retain_handling: cfg.retain_handling(),
                },
            )
        })
        .collect();
    let setup = async {
        client
            .subscribe(&filters, pick(&cfg.props.subscribe))
            .await?;
        for u in &cfg.unsub_topics {
            client.unsubscribe(u, pick(&cfg.props.unsubscribe)).await?;
        }
        Ok::<(), Error>(())
    };
    if let Err(e) = setup.await {
        return lost(cfg, st, &e);
    }
    loop {
        let ev = tokio::select! {
            ev = client.poll() => ev,
            _ = sleep_until(deadline) => {
                let _ = client.disconnect(SIGNAL_REASON, pick(&cfg.props.disconnect)).await;
                err_print(cfg, "Timed out\n");
                return Flow::Exit(27);
            }
            _ = signals.recv() => {
                let _ = client.disconnect(SIGNAL_REASON, pick(&cfg.props.disconnect)).await;
                return Flow::Exit(0);
            }
        };
        let flow = match ev {
            Ok(Event::Message(rec)) => on_message(cfg, client, st, &rec).await,
            Ok(Event::SubAck(s)) => {
                if cfg.debug && !cfg.quiet {
                    let codes: Vec<String> = s.reasons.iter().map(|r| r.0.to_string()).collect();
                    out_write(
                        format!("Subscribed (mid: {}): {}\n", s.packet_id, codes.join(", "))
                            .as_bytes(),
                    );
                }
                if !s.reasons.iter().any(|r| r.0 < 0x80) {
                    let _ = client
                        .disconnect(
                            ReasonCode::NORMAL_DISCONNECTION,
                            pick(&cfg.props.disconnect),
                        )
                        .await;
                    err_print(cfg, "All subscription requests were denied.\n");
                    return Flow::Exit(1);
                }
                if cfg.exit_after_sub {
                    Flow::Exit(0)
                } else {
                    Flow::Continue
                }
            }
            Ok(Event::Published { mid, .. }) => {
                if !st.process && (st.last_mid == Some(mid) || st.last_mid.is_none()) {
                    Flow::Exit(0)
                } else {
                    Flow::Continue
                }
            }
            Ok(Event::UnsubAck(_)) => Flow::Continue,
            Err(e) => return lost(cfg, st, &e),
        };
        match flow {
            Flow::Continue => {}
            Flow::Exit(code) => {
                let _ = client
                    .disconnect(
                        ReasonCode::NORMAL_DISCONNECTION,
                        pick(&cfg.props.disconnect),
                    )
                    .await;
                return Flow::Exit(code);
            }
            Flow::Reconnect => return Flow::Reconnect,
        }
    }
}

fn lost(cfg: &Config, st: &State, e: &Error) -> Flow {
    match e {
        Error::ConnectionLost { .. } | Error::Io(_) if st.process => Flow::Reconnect,
        Error::ConnectionLost { .. } | Error::Io(_) => Flow::Exit(0),
        other => Flow::Exit(runtime_failure(cfg, other)),
    }
}

async fn on_message(cfg: &Config, client: &mut Client, st: &mut State, rec: &Received) -> Flow {
    let p = &rec.publish;
    if !st.process {
        return Flow::Continue;
    }
    if cfg.retained_only && !p.retain {
        st.process = false;
        return if st.last_mid.is_none() || client.is_idle() {
            Flow::Exit(0)
        } else {
            Flow::Continue
        };
    }
    if p.retain && cfg.no_retain {
        return Flow::Continue;
    }
    if cfg.filter_outs.iter().any(|f| matches(f, &p.topic)) {
        return Flow::Continue;
    }
    if cfg.remove_retained && p.retain {
        match client
            .publish(
                &p.topic,
                Bytes::new(),
                midge_codec::QoS::AtLeastOnce,
                true,
                Properties::default(),
            )
            .await
        {
            Ok(mid) => st.last_mid = Some(mid),
            Err(e) => return lost(cfg, st, &e),
        }
    }
    print_received(cfg, &st.opts, rec, &mut st.rng);
    if cfg.msg_count > 0 {
        st.count += 1;
        if st.count == cfg.msg_count {
            st.process = false;
            if st.last_mid.is_none() || client.is_idle() {
                return Flow::Exit(0);
            }
        }
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn filter_out_matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/c", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} {t}");
        }
    }
}
