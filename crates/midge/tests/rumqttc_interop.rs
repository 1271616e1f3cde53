//! rumqttc (a client we did not write) against the real broker: QoS 2 both
//! ways, exactly once and in order, over 3.1.1 and 5.0.

mod support;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use support::RunningBroker;
use tokio::time::timeout;

const COUNT: usize = 200;

#[tokio::test]
async fn qos2_exactly_once_in_order_v311() {
    let broker = RunningBroker::start(&[]);
    let mut sub_opts = MqttOptions::new("rumqttc-sub", "127.0.0.1", broker.port);
    sub_opts.set_keep_alive(Duration::from_secs(30));
    let (sub, mut sub_loop) = AsyncClient::new(sub_opts, 100);
    sub.subscribe("interop/qos2/#", QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    // Wait for SUBACK before publishing.
    timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(a))) = sub_loop.poll().await {
                assert_eq!(
                    a.return_codes,
                    vec![rumqttc::SubscribeReasonCode::Success(QoS::ExactlyOnce)]
                );
                break;
            }
        }
    })
    .await
    .expect("SUBACK in time");

    let mut pub_opts = MqttOptions::new("rumqttc-pub", "127.0.0.1", broker.port);
    pub_opts.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut pub_loop) = AsyncClient::new(pub_opts, 100);
    let pub_task = tokio::spawn(async move {
        let mut completed = 0;
        while completed < COUNT {
            match pub_loop.poll().await {
                Ok(Event::Incoming(Packet::PubComp(_))) => completed += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    for i in 0..COUNT {
        publisher
            .publish(
                "interop/qos2/x",
                QoS::ExactlyOnce,
                false,
                format!("{i}").into_bytes(),
            )
            .await
            .expect("publish");
    }

    let mut received = Vec::new();
    timeout(Duration::from_secs(20), async {
        while received.len() < COUNT {
            match sub_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    assert_eq!(p.qos, QoS::ExactlyOnce);
                    assert_eq!(p.topic, "interop/qos2/x");
                    received.push(String::from_utf8(p.payload.to_vec()).expect("utf8"));
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "only {} of {COUNT} messages arrived\n{}",
            received.len(),
            broker.log_text()
        )
    });
    let expected: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
    timeout(Duration::from_secs(10), pub_task)
        .await
        .expect("all PUBCOMPs in time")
        .expect("publisher task");

    // Nothing more arrives: no duplicates.
    let extra = timeout(Duration::from_millis(300), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = sub_loop.poll().await {
                return p;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "duplicate delivery: {extra:?}");
}

#[tokio::test]
async fn qos2_round_trip_v5() {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as Client5, Event as E5, MqttOptions as Opts5};

    let broker = RunningBroker::start(&[]);
    let (client, mut ev) = Client5::new(Opts5::new("rumqttc-v5", "127.0.0.1", broker.port), 10);
    client
        .subscribe("v5/t", Q5::ExactlyOnce)
        .await
        .expect("subscribe");
    let got = timeout(Duration::from_secs(10), async {
        let mut published = false;
        loop {
            match ev.poll().await.expect("event loop") {
                E5::Incoming(P5::SubAck(_)) if !published => {
                    published = true;
                    client
                        .publish("v5/t", Q5::ExactlyOnce, false, "hello v5")
                        .await
                        .expect("publish");
                }
                E5::Incoming(P5::Publish(p)) => return p,
                _ => {}
            }
        }
    })
    .await
    .expect("message in time");
    assert_eq!(&got.payload[..], b"hello v5");
    assert_eq!(got.qos, Q5::ExactlyOnce);
}
