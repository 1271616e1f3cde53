//! midge_pub: publish one message (`-m`, `-f`, `-s`, `-n`, `--repeat`) or
//! one per line of stdin (`-l`), then disconnect once every message is
//! complete, as mosquitto_pub does.

use std::io::BufRead;

use bytes::Bytes;
use midge_codec::{Properties, ReasonCode};

use super::args::{Config, PubMode};
use super::{
    connect_failure, connect_options, err_print, load_message, print_usage, reason_string,
};
use crate::client::{Client, Error, Event};

/// Exit code and text for an error after connecting (libmosquitto's codes:
/// 2 protocol, 7 connection lost, 8 TLS, 14 system error; a TLS alert is
/// EPROTO, which mosquitto's tools leave with 1).
pub(crate) fn runtime_failure(cfg: &Config, e: &Error) -> i32 {
    err_print(cfg, &format!("Error: {e}\n"));
    match e {
        Error::ConnectionLost { .. } => 7,
        Error::Protocol(_) => 2,
        Error::TlsSetup(_)
        | Error::TlsVerify(_)
        | Error::TlsHandshake(_)
        | Error::TlsKeyPassword(_) => 8,
        Error::Io(_) => 14,
        _ => 1,
    }
}

fn publish_warning(cfg: &Config, mid: u16, reason: ReasonCode) {
    if reason.is_error() {
        err_print(
            cfg,
            &format!(
                "Warning: Publish {mid} failed: {}.\n",
                reason_string(reason.0)
            ),
        );
    }
}

async fn wait_complete(cfg: &Config, client: &mut Client, mid: u16) -> Result<(), Error> {
    loop {
        if let Event::Published { mid: m, reason } = client.poll().await? {
            publish_warning(cfg, m, reason);
            if m == mid {
                return Ok(());
            }
        }
    }
}

pub(super) async fn main(cfg: Config) -> i32 {
    let Some(topic) = cfg.topic.clone() else {
        return missing(&cfg);
    };
    if cfg.pub_mode == PubMode::None {
        return missing(&cfg);
    }
    let message = match load_message(&cfg) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let opts = match connect_options(&cfg) {
        Ok(o) => o,
        Err(line) => {
            err_print(&cfg, &line);
            return 1;
        }
    };
    let mut client = match Client::connect(&opts).await {
        Ok((c, _)) => c,
        Err(e) => {
            let (line, code) = connect_failure(&e);
            err_print(&cfg, &line);
            if let Error::Refused { version, .. } = e {
                // What mosquitto_pub's loop then reports.
                err_print(
                    &cfg,
                    if version.is_v5() {
                        "Error: A network protocol error occurred when communicating with the broker.\n"
                    } else {
                        "Error: The connection was refused.\n"
                    },
                );
            }
            return code;
        }
    };
    let props = if cfg.protocol.is_v5() {
        cfg.props.publish.clone()
    } else {
        Properties::default()
    };
    let result = match message {
        Some(payload) => publish_repeated(&cfg, &mut client, &topic, payload, props).await,
        None => publish_lines(&cfg, &mut client, &topic, props).await,
    };
    if let Err(e) = result {
        return runtime_failure(&cfg, &e);
    }
    let dprops = if cfg.protocol.is_v5() {
        cfg.props.disconnect.clone()
    } else {
        Properties::default()
    };
    match client
        .disconnect(ReasonCode::NORMAL_DISCONNECTION, dprops)
        .await
    {
        Ok(()) => 0,
        Err(e) => runtime_failure(&cfg, &e),
    }
}

fn missing(cfg: &Config) -> i32 {
    // mosquitto_pub prints this even with --quiet.
    eprintln!("Error: Both topic and message must be supplied.");
    let _ = cfg;
    print_usage(super::Tool::Pub);
    1
}

async fn publish_repeated(
    cfg: &Config,
    client: &mut Client,
    topic: &str,
    payload: Bytes,
    props: Properties,
) -> Result<(), Error> {
    for k in 0..cfg.repeat_count {
        let mid = client
            .publish(topic, payload.clone(), cfg.qos, cfg.retain, props.clone())
            .await?;
        wait_complete(cfg, client, mid).await?;
        if k + 1 < cfg.repeat_count && !cfg.repeat_delay.is_zero() {
            tokio::time::sleep(cfg.repeat_delay).await;
        }
    }
    Ok(())
}

/// `-l`: one message per line of stdin, without its `\n` (a `\r` stays, as
/// with mosquitto_pub); an empty line is an empty message.
async fn publish_lines(
    cfg: &Config,
    client: &mut Client,
    topic: &str,
    props: Properties,
) -> Result<(), Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut eof = false;
    loop {
        if eof && client.is_idle() {
            return Ok(());
        }
        tokio::select! {
            line = rx.recv(), if !eof => match line {
                Some(l) => {
                    client
                        .publish(topic, Bytes::from(l), cfg.qos, cfg.retain, props.clone())
                        .await?;
                }
                None => eof = true,
            },
            ev = client.poll() => {
                if let Event::Published { mid, reason } = ev? {
                    publish_warning(cfg, mid, reason);
                }
            }
        }
    }
}
