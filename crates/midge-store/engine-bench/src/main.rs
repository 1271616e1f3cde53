//! Group-commit throughput of three engines for Midge's store: batches of
//! PutDelivery / DeleteDelivery-sized ops, one durable commit per batch.
//! The numbers in docs/durability.md come from it.
//!
//! Run from this directory: `cargo run --release -- [seconds per round] [rounds]`
//! (temporary stores go in the current directory).
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

const VALUE: usize = 120; // a small PUBLISH (topic ~20 B, payload ~64 B) plus record fields

fn key(seq: u64) -> Vec<u8> {
    let mut k = b"client-0042/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// One batch: `n` ops, half puts of new seqs and half deletes of old ones
/// (steady state of a queue), at least one put.
fn batch_ops(next: &mut u64, oldest: &mut u64, n: usize) -> Vec<(Vec<u8>, bool)> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        if i % 2 == 0 || *oldest >= *next {
            v.push((key(*next), true));
            *next += 1;
        } else {
            v.push((key(*oldest), false));
            *oldest += 1;
        }
    }
    v
}

fn run(_name: &str, batch: usize, budget: Duration, mut commit: impl FnMut(&[(Vec<u8>, bool)])) -> f64 {
    let (mut next, mut oldest) = (0u64, 0u64);
    let start = Instant::now();
    let mut groups = 0u64;
    while start.elapsed() < budget {
        let ops = batch_ops(&mut next, &mut oldest, batch);
        commit(&ops);
        groups += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    groups as f64 / secs
}

fn main() {
    let budget = Duration::from_secs(std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3));
    let value = vec![0xAB; VALUE];
    let rounds: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    for batch in [1usize, 16, 256] {
    let mut res: Vec<(&str, Vec<f64>)> = vec![("journal", vec![]), ("jprealloc", vec![]), ("redb", vec![]), ("fjall", vec![])];
    for _round in 0..rounds {
        // Hand-written journal: [len u32][crc32c u32][payload], fdatasync per group.
        {
            let dir = tempfile::tempdir_in(".").unwrap();
            let mut f: File = OpenOptions::new().create(true).append(true).open(dir.path().join("j")).unwrap();
            let mut buf = Vec::new();
            res[0].1.push(run("journal", batch, budget, |ops| {
                buf.clear();
                buf.extend_from_slice(&[0; 8]);
                for (k, put) in ops {
                    buf.push(*put as u8);
                    buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    buf.extend_from_slice(k);
                    if *put {
                        buf.extend_from_slice(&value);
                    }
                }
                let len = (buf.len() - 8) as u32;
                let crc = crc32c::crc32c(&buf[8..]);
                buf[0..4].copy_from_slice(&len.to_le_bytes());
                buf[4..8].copy_from_slice(&crc.to_le_bytes());
                f.write_all(&buf).unwrap();
                f.sync_data().unwrap();
            }));
        }
        // The same journal, space reserved ahead in 4 MiB of written zeros so
        // fdatasync has no file size or extent to update.
        {
            use std::io::{Seek, SeekFrom};
            let dir = tempfile::tempdir_in(".").unwrap();
            let mut f: File = OpenOptions::new().create(true).read(true).write(true).open(dir.path().join("j")).unwrap();
            let mut buf = Vec::new();
            let (mut pos, mut reserved) = (0u64, 0u64);
            let zeros = vec![0u8; 4 << 20];
            res[1].1.push(run("jprealloc", batch, budget, |ops| {
                buf.clear();
                buf.extend_from_slice(&[0; 8]);
                for (k, put) in ops {
                    buf.push(*put as u8);
                    buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    buf.extend_from_slice(k);
                    if *put {
                        buf.extend_from_slice(&value);
                    }
                }
                let len = (buf.len() - 8) as u32;
                let crc = crc32c::crc32c(&buf[8..]);
                buf[0..4].copy_from_slice(&len.to_le_bytes());
                buf[4..8].copy_from_slice(&crc.to_le_bytes());
                if pos + buf.len() as u64 > reserved {
                    f.seek(SeekFrom::Start(reserved)).unwrap();
                    f.write_all(&zeros).unwrap();
                    f.sync_all().unwrap();
                    reserved += zeros.len() as u64;
                }
                f.seek(SeekFrom::Start(pos)).unwrap();
                f.write_all(&buf).unwrap();
                pos += buf.len() as u64;
                f.sync_data().unwrap();
            }));
        }
        // redb: one write transaction per group, Durability::Immediate.
        {
            let dir = tempfile::tempdir_in(".").unwrap();
            let db = redb::Database::create(dir.path().join("r.redb")).unwrap();
            let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("d");
            res[2].1.push(run("redb", batch, budget, |ops| {
                let tx = db.begin_write().unwrap();
                {
                    let mut t = tx.open_table(table).unwrap();
                    for (k, put) in ops {
                        if *put {
                            t.insert(k.as_slice(), value.as_slice()).unwrap();
                        } else {
                            t.remove(k.as_slice()).unwrap();
                        }
                    }
                }
                tx.commit().unwrap();
            }));
        }
        // fjall: one write batch per group, then persist(SyncData).
        {
            let dir = tempfile::tempdir_in(".").unwrap();
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let ks = db.keyspace("d", fjall::KeyspaceCreateOptions::default).unwrap();
            res[3].1.push(run("fjall", batch, budget, |ops| {
                let mut b = db.batch();
                for (k, put) in ops {
                    if *put {
                        b.insert(&ks, k.clone(), value.clone());
                    } else {
                        b.remove(&ks, k.clone());
                    }
                }
                b.commit().unwrap();
                db.persist(fjall::PersistMode::SyncData).unwrap();
            }));
        }
        }
    for (name, mut v) in res {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = v[v.len() / 2];
        println!("{name:9} batch {batch:3}: median {med:7.0} commits/s = {:9.0} ops/s (min {:.0}, max {:.0} commits/s over {} rounds)", med * batch as f64, v[0], v[v.len()-1], v.len());
    }
    }
}
