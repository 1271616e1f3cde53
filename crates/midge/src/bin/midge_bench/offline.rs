//! `p2p --persistent --offline`: messages queued for offline persistent
//! sessions.
//!
//! With its subscribers online and acknowledging at once, a broker with
//! persistence on may never need to write a message (midge does not write a
//! delivery acknowledged before it reaches the disk). Here nobody is there
//! to acknowledge: each subscriber subscribes on clean session 0 and
//! disconnects, the publishers publish while every session is offline, so
//! every message must go to the store before the publisher's PUBACK; then
//! the subscribers come back to their sessions and drain what was queued.
//!
//! Two numbers come out: the publish phase's rate, publishes acknowledged by
//! the broker per second (the write path; also `msgs_per_sec`, and with
//! `--broker-pid` per broker CPU second of that phase), and `drain_s`, the
//! time from reconnecting to the last delivery. Loss is acknowledged
//! publishes that never arrived after reconnecting.

use anyhow::{anyhow, Result};
use midge_codec::QoS;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::mqtt::{self, SubResult};
use crate::scenarios::{
    connect_publishers, drain_limit, drain_quiet, end_progress, join_subscribers, loss_pct,
    progress, publish, round3, set_broker, set_latency, wait_for_deliveries, Ctx, Report, SubSpec,
};
use crate::stats::{self, Histogram, Live};

/// Subscribers away, publish, subscribers back, drain.
pub async fn run(
    ctx: &Ctx,
    name: &str,
    qos: QoS,
    subs: Vec<SubSpec>,
    pubs: Vec<(String, Option<f64>)>,
    mut report: Report,
) -> Result<Report> {
    let o = &ctx.opts;
    let start_sample = ctx.sample()?;
    let live = Arc::new(Live::default());
    let ids: Vec<String> = (0..subs.len())
        .map(|i| Ctx::fixed_client_id(name, "s", i))
        .collect();

    let sub_start = Instant::now();
    leave_subscribed(ctx, &ids, subs, qos).await?;
    let subscribe_s = sub_start.elapsed().as_secs_f64();

    // The publish phase: nobody to deliver to.
    let pub_conns = connect_publishers(ctx, name, pubs).await?;
    let n_pubs = pub_conns.len();
    let cpu_start = ctx.sample()?;
    let bar = progress(name, live.clone(), Instant::now());
    let published = publish(ctx, qos, pub_conns, &live).await;
    let cpu_end = ctx.sample()?;
    if let Some(e) = published.error {
        end_progress(bar);
        return Err(e);
    }

    // The drain: every acknowledged publish must reach its subscriber.
    let expected = published.acked;
    let drain_start = Instant::now();
    let drain_start_ns = stats::now_ns();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sub_tasks = come_back(ctx, &ids, &live, stop_rx).await;
    if sub_tasks.is_ok() {
        let limit = drain_start + drain_limit(o);
        wait_for_deliveries(&live, expected, drain_quiet(o), limit).await;
    }
    let end_sample = ctx.sample()?;
    end_progress(bar);
    let _ = stop_tx.send(true);
    let (received, _) = join_subscribers(sub_tasks?).await?;
    let last_rx = live.last_rx_ns.load(Ordering::Relaxed);
    let drain_s = if received > 0 && last_rx > drain_start_ns {
        (last_rx - drain_start_ns) as f64 / 1e9
    } else {
        drain_start.elapsed().as_secs_f64()
    };

    let rate = if published.publish_s > 0.0 {
        published.acked as f64 / published.publish_s
    } else {
        0.0
    };
    report.set("qos", json!(qos as u8));
    report.set("persistent", json!(true));
    report.set("offline", json!(true));
    report.set("payload", json!(o.payload));
    report.set("publishers", json!(n_pubs));
    report.set("publish_rate", json!(round3(rate)));
    report.set("msgs_per_sec", json!(round3(rate)));
    report.set("sent", json!(published.sent));
    report.set("acked", json!(published.acked));
    report.set("expected", json!(expected));
    report.set("received", json!(received));
    report.set("delivered", json!(received));
    report.set("loss_pct", json!(round3(loss_pct(expected, received))));
    report.set("duration_s", json!(round3(published.publish_s)));
    report.set("publish_s", json!(round3(published.publish_s)));
    report.set("drain_s", json!(round3(drain_s)));
    report.set("subscribe_s", json!(round3(subscribe_s)));
    // Send-to-delivery times would only measure how long the sessions were
    // away: no latency here.
    set_latency(&mut report, &Histogram::default());
    if let (Some(s0), Some(c0), Some(c1), Some(s1)) = (start_sample, cpu_start, cpu_end, end_sample)
    {
        set_broker(&mut report, published.acked, s0, c0, c1, s1.rss_kb);
        report.set("broker_rss_publish_end_kb", json!(c1.rss_kb));
    }
    Ok(report)
}

/// Each subscriber ends any earlier session under its id, connects on clean
/// session 0, subscribes at `qos` and disconnects cleanly: its session
/// stays, subscribed and offline. In parallel.
async fn leave_subscribed(ctx: &Ctx, ids: &[String], subs: Vec<SubSpec>, qos: QoS) -> Result<()> {
    let mut tasks = JoinSet::new();
    for (i, (spec, id)) in subs.into_iter().zip(ids).enumerate() {
        let target = ctx.target.clone();
        let id = id.clone();
        let per_packet = ctx.opts.filters_per_subscribe;
        tasks.spawn(async move {
            mqtt::clear_session(&target, target.source(i), &id).await?;
            let (stream, buf) = mqtt::connect(&target, target.source(i), &id, false).await?;
            let (rd, wr, _) = mqtt::subscribe(stream, buf, &spec.filters, qos, per_packet).await?;
            mqtt::close(rd, wr).await;
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| anyhow!("subscriber task failed: {e}"))??;
    }
    Ok(())
}

/// Each subscriber reconnects to its session (clean session 0) and receives
/// what was queued for it, acknowledging each delivery, until `stop`.
async fn come_back(
    ctx: &Ctx,
    ids: &[String],
    live: &Arc<Live>,
    stop: watch::Receiver<bool>,
) -> Result<JoinSet<Result<SubResult>>> {
    let mut connecting = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let target = ctx.target.clone();
        let id = id.clone();
        connecting.spawn(async move { mqtt::connect(&target, target.source(i), &id, false).await });
    }
    let mut tasks = JoinSet::new();
    while let Some(r) = connecting.join_next().await {
        let (stream, buf) = r.map_err(|e| anyhow!("subscriber task failed: {e}"))??;
        let (rd, wr) = stream.into_split();
        tasks.spawn(mqtt::run_subscriber(
            rd,
            wr,
            buf,
            live.clone(),
            stop.clone(),
        ));
    }
    Ok(tasks)
}
