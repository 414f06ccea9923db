//! What sealing and opening one datagram costs, by body size and protection: the
//! micro-benchmark behind docs/SECURITY.md's cost section.
//! `cargo run --release -p kv-shared --example seal_cost [-- iterations]`
//!
//! The rounds interleave every protection and size, and the figures are medians of the
//! rounds, so a burst of load on a shared machine skews one round, not one variant.

use kv_shared::auth::{open, Key, Protection, Sealer, Stamp};
use kv_shared::wire::{self, Kind};
use std::hint::black_box;
use std::time::Instant;

const CLUSTER_ID: u64 = 7001;
const BODY_BYTES: [usize; 3] = [64, 200, 1_400];
const PROTECTIONS: [Protection; 3] = [
    Protection::Unauthenticated,
    Protection::Mac,
    Protection::Encrypt,
];
const ROUNDS: usize = 7;

/// ns per seal and per open of a `body_bytes` body, over `iterations` each.
fn one_round(protection: Protection, body_bytes: usize, iterations: u32) -> (f64, f64) {
    let key = Key::from_bytes([7; 32]);
    let sealer = Sealer::peer(&key, 1, 2).receiving_as(protection);
    let receivers = [sealer.clone()];
    let body = vec![0xA5u8; body_bytes];
    let mut datagram = Vec::with_capacity(body_bytes + 128);
    let mut stamp = Stamp {
        incarnation: 1,
        counter: 0,
        echo: 9,
    };
    let started = Instant::now();
    for _ in 0..iterations {
        datagram.clear();
        stamp.counter += 1;
        sealer.seal(
            Kind::Peer,
            CLUSTER_ID,
            1,
            stamp,
            protection,
            black_box(&body),
            &mut datagram,
        );
        black_box(&datagram);
    }
    let seal_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    let header = wire::decode(&datagram, CLUSTER_ID).expect("sealed").0;
    let mut copy = datagram.clone();
    let started = Instant::now();
    for _ in 0..iterations {
        // Opening decrypts in place: start from the sealed bytes each time (the copy is
        // part of what every protection pays, `none` included).
        copy.copy_from_slice(&datagram);
        let opened = open(black_box(&mut copy), &header, &receivers).expect("opens");
        black_box(opened.body);
    }
    let open_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    (seal_ns, open_ns)
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("iterations: a number"))
        .unwrap_or(50_000);
    let variants: Vec<(Protection, usize)> = PROTECTIONS
        .iter()
        .flat_map(|&p| BODY_BYTES.iter().map(move |&b| (p, b)))
        .collect();
    let mut rounds = vec![(Vec::new(), Vec::new()); variants.len()];
    for _ in 0..ROUNDS {
        for (i, &(protection, body_bytes)) in variants.iter().enumerate() {
            let (seal_ns, open_ns) = one_round(protection, body_bytes, iterations);
            rounds[i].0.push(seal_ns);
            rounds[i].1.push(open_ns);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("protection  body B   seal ns   open ns  (medians of {ROUNDS} interleaved rounds of {iterations})");
    for (i, &(protection, body_bytes)) in variants.iter().enumerate() {
        let seal_ns = median(&mut rounds[i].0);
        let open_ns = median(&mut rounds[i].1);
        println!(
            "{:<10} {body_bytes:>7} {seal_ns:>9.0} {open_ns:>9.0}",
            protection.name()
        );
    }
}
