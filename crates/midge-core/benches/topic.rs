//! Topic matching on the publish path and retained lookup on the subscribe path.
//!
//! The trees are shaped like a device fleet: each key subscribes to its own
//! `devices/{id}/telemetry`, and some add wildcard filters that do not match the
//! published topic, so each publish has exactly one match. Matching should cost
//! about the same with 1, 10k or 100k subscriptions.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use midge_core::retained::RetainedIndex;
use midge_core::topic_tree::SubscriptionTree;

/// `n` subscriptions: `devices/{id}/telemetry` for most keys, and one in ten
/// keys holding a wildcard filter instead (`devices/{id}/#`, `devices/+/status`,
/// `+/{id}/config`, `$SYS/#`, `alerts/#`).
fn fleet(n: u32) -> SubscriptionTree<u32, u8> {
    let mut tree = SubscriptionTree::new();
    for id in 0..n {
        let filter = match id % 50 {
            10 => format!("devices/{id}/#"),
            20 => "devices/+/status".to_owned(),
            30 => format!("+/{id}/config"),
            40 => "$SYS/#".to_owned(),
            45 => "alerts/#".to_owned(),
            _ => format!("devices/{id}/telemetry"),
        };
        tree.insert(&filter, id, 1);
    }
    tree
}

fn publish(c: &mut Criterion) {
    let topic = "devices/42/telemetry";
    let mut group = c.benchmark_group("tree_for_each_match");
    let mut baseline = SubscriptionTree::new();
    baseline.insert(topic, 42u32, 1u8);
    let trees = [
        (1, baseline),
        (10_000, fleet(10_000)),
        (100_000, fleet(100_000)),
    ];
    for (n, tree) in &trees {
        let mut matches = 0;
        tree.for_each_match(topic, |_, _| matches += 1);
        assert_eq!(matches, 1);
        group.bench_with_input(BenchmarkId::from_parameter(n), tree, |b, tree| {
            b.iter(|| {
                let mut sum = 0u32;
                tree.for_each_match(black_box(topic), |k, v| sum += k + u32::from(*v));
                sum
            })
        });
    }
    group.finish();
}

fn subscribe_churn(c: &mut Criterion) {
    // 100k keys on one filter: insert + remove of one more key stays O(1).
    let mut tree = SubscriptionTree::new();
    for id in 0..100_000u32 {
        tree.insert("news/#", id, ());
    }
    c.bench_function("tree_insert_remove_100k_keys_same_filter", |b| {
        b.iter(|| {
            tree.insert(black_box("news/#"), 1_000_000, ());
            tree.remove(black_box("news/#"), 1_000_000)
        })
    });
    let mut tree = fleet(100_000);
    c.bench_function("tree_insert_remove_new_filter_100k", |b| {
        b.iter(|| {
            tree.insert(black_box("devices/new/telemetry"), 1_000_000, 1);
            tree.remove(black_box("devices/new/telemetry"), 1_000_000)
        })
    });
}

fn retained(c: &mut Criterion) {
    let n = 100_000u32;
    let mut index = RetainedIndex::new();
    for id in 0..n {
        index.insert(&format!("devices/{id}/telemetry"), id);
        index.insert(&format!("devices/{id}/status"), id);
    }
    let filter = "devices/+/telemetry";
    let mut matches = 0;
    index.for_each_match(filter, |_, _| matches += 1);
    assert_eq!(matches, n);

    let mut group = c.benchmark_group("retained_for_each_match");
    group.throughput(Throughput::Elements(u64::from(n)));
    group.bench_function("devices/+/telemetry of 200k", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            index.for_each_match(black_box(filter), |t, v| {
                sum += t.len() as u64 + u64::from(*v);
            });
            sum
        })
    });
    group.finish();
    c.bench_function(
        "retained_for_each_match/devices/42/telemetry of 200k",
        |b| {
            b.iter(|| {
                let mut sum = 0u64;
                index.for_each_match(black_box("devices/42/telemetry"), |_, v| {
                    sum += u64::from(*v)
                });
                sum
            })
        },
    );
}

criterion_group!(benches, publish, subscribe_churn, retained);
criterion_main!(benches);
