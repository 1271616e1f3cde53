//! midge_rr: subscribe to the response topic, publish the request (with
//! Response Topic, 5.0) once subscribed, print the first response and exit,
//! as mosquitto_rr does (it closes without DISCONNECT).

use std::time::Duration;

use bytestring::ByteString;
use midge_codec::{Properties, ReasonCode, SubscriptionOptions};
use tokio::time::Instant;

use super::args::{Config, PubMode};
use super::publish::runtime_failure;
use super::subscribe::{print_opts, print_received, sleep_until, Signals};
use super::{connect_failure, connect_options, err_print, load_message, Rng};
use crate::client::{Client, Event};

pub(super) async fn main(cfg: Config) -> i32 {
    let (Some(topic), Some(response_topic)) = (cfg.topic.clone(), cfg.response_topic.clone())
    else {
        return missing();
    };
    if cfg.pub_mode == PubMode::None || cfg.pub_mode == PubMode::StdinLine {
        return missing();
    }
    let payload = match load_message(&cfg) {
        Ok(Some(m)) => m,
        Ok(None) => return missing(),
        Err(code) => return code,
    };
    let opts = match connect_options(&cfg) {
        Ok(o) => o,
        Err(line) => {
            err_print(&cfg, &line);
            return 1;
        }
    };
    let v5 = cfg.protocol.is_v5();
    let pick = |p: &Properties| if v5 { p.clone() } else { Properties::default() };
    let mut publish_props = pick(&cfg.props.publish);
    if v5 {
        publish_props.response_topic = Some(ByteString::from(response_topic.as_str()));
    }
    let deadline = cfg
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(u64::from(t)));
    let mut signals = Signals::new();
    let mut client = tokio::select! {
        c = Client::connect(&opts) => match c {
            Ok((c, _)) => c,
            Err(e) => {
                let (mut line, code) = connect_failure(&e);
                if let crate::client::Error::Refused { code, version } = e {
                    // mosquitto_rr names 3.x return codes with the 5.0 table.
                    if !version.is_v5() {
                        line = format!("Connection error: {}\n", super::reason_string(code));
                    }
                }
                err_print(&cfg, &line);
                return code;
            }
        },
        _ = sleep_until(deadline) => return 255,
        _ = signals.recv() => return 255,
    };
    let filters = [(
        response_topic,
        SubscriptionOptions {
            qos: cfg.qos,
            no_local: false,
            retain_as_published: cfg.retain_as_published,
            retain_handling: cfg.retain_handling(),
        },
    )];
    if let Err(e) = client.subscribe(&filters, pick(&cfg.props.subscribe)).await {
        return runtime_failure(&cfg, &e);
    }
    let popts = print_opts(&cfg);
    let mut rng = Rng::seeded();
    let mut count = 0;
    loop {
        let ev = tokio::select! {
            ev = client.poll() => ev,
            _ = sleep_until(deadline) => {
                let _ = client.disconnect(ReasonCode::DISCONNECT_WITH_WILL, pick(&cfg.props.disconnect)).await;
                err_print(&cfg, "Timed out\n");
                return 27;
            }
            _ = signals.recv() => {
                let _ = client.disconnect(ReasonCode::DISCONNECT_WITH_WILL, pick(&cfg.props.disconnect)).await;
                return 0;
            }
        };
        match ev {
            Ok(Event::SubAck(_)) => {
                if let Err(e) = client
                    .publish(
                        &topic,
                        payload.clone(),
                        cfg.qos,
                        cfg.retain,
                        publish_props.clone(),
                    )
                    .await
                {
                    return runtime_failure(&cfg, &e);
                }
            }
            Ok(Event::Message(rec)) => {
                if rec.publish.retain && cfg.no_retain {
                    continue;
                }
                print_received(&cfg, &popts, &rec, &mut rng);
                count += 1;
                if count >= cfg.msg_count {
                    client.close().await;
                    return 0;
                }
            }
            Ok(_) => {}
            Err(e) => return runtime_failure(&cfg, &e),
        }
    }
}

fn missing() -> i32 {
    eprintln!("Error: All of topic, message, and response topic must be supplied.");
    eprint!("\nUse 'midge_rr --help' to see usage.\n");
    1
}
