//! Which MAC tags a datagram most cheaply on this CPU: the candidates from well-kept
//! crates over the datagram sizes the cluster sends, the comparison behind
//! docs/SECURITY.md's choice of the `mac` protection.
//! `cargo run --release -p kv-shared --example mac_choice [-- iterations]`
//!
//! Each candidate tags `header + stamp + body` (56 bytes more than the body) under a key
//! set up once, as a `Sealer` holds it. The rounds interleave the candidates and the
//! figures are medians of the rounds, so a burst of load on a shared machine skews one
//! round, not one candidate.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use aes_gcm_siv::Aes256GcmSiv;
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hint::black_box;
use std::time::Instant;

const BODY_BYTES: [usize; 4] = [64, 200, 600, 1_400];
/// Header and stamp: what every tag covers besides the body.
const FRAME_BYTES: usize = 56;
const ROUNDS: usize = 7;

type Tagger = Box<dyn Fn(u64, &[u8]) -> [u8; 16]>;

/// An AEAD with a 96-bit nonce used as a MAC: the message is associated data of an empty
/// plaintext, the nonce is the counter `n`, and the tag is cut to 16 bytes.
fn aead_tagger<A: AeadInPlace<NonceSize = U12> + 'static>(cipher: A) -> Tagger {
    Box::new(move |n, m: &[u8]| {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_le_bytes());
        let t = cipher
            .encrypt_in_place_detached(&nonce.into(), m, &mut [])
            .expect("short");
        t[..16].try_into().expect("16")
    })
}

fn candidates() -> Vec<(&'static str, Tagger)> {
    let key = [7u8; 32];
    let blake3_key = key;
    let xchacha = XChaCha20Poly1305::new(&key.into());
    let hmac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    let cut = |t: &[u8]| -> [u8; 16] { t[..16].try_into().expect("16") };
    vec![
        (
            "blake3 keyed",
            Box::new(move |_, m: &[u8]| cut(blake3::keyed_hash(&blake3_key, m).as_bytes())),
        ),
        ("aes-256-gmac", aead_tagger(Aes256Gcm::new(&key.into()))),
        (
            "aes-128-gmac",
            aead_tagger(Aes128Gcm::new_from_slice(&key[..16]).expect("16 bytes")),
        ),
        (
            "aes-256-gcm-siv",
            aead_tagger(Aes256GcmSiv::new(&key.into())),
        ),
        (
            "chacha20-poly1305",
            aead_tagger(ChaCha20Poly1305::new(&key.into())),
        ),
        (
            "xchacha20-poly1305",
            Box::new(move |n, m: &[u8]| {
                let mut x = [0u8; 24];
                x[16..].copy_from_slice(&n.to_le_bytes());
                let t = xchacha
                    .encrypt_in_place_detached(&x.into(), m, &mut [])
                    .expect("short");
                cut(&t)
            }),
        ),
        (
            "hmac-sha256",
            Box::new(move |_, m: &[u8]| {
                let mut h = hmac.clone();
                h.update(m);
                cut(&h.finalize().into_bytes())
            }),
        ),
    ]
}

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("iterations: a number"))
        .unwrap_or(100_000);
    let candidates = candidates();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpu
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has: Vec<&str> = [
        "aes",
        "pclmulqdq",
        "vaes",
        "vpclmulqdq",
        "avx2",
        "avx512f",
        "sha_ni",
    ]
    .into_iter()
    .filter(|f| flags.contains(f))
    .collect();
    println!("cpu flags: {}", has.join(" "));
    println!("ns per tag, median of {ROUNDS} interleaved rounds of {iterations}; ratio to blake3");
    print!("{:<20}", "body B (+56 framing)");
    for b in BODY_BYTES {
        print!("{b:>16}");
    }
    println!();
    // ns[candidate][size][round]
    let mut ns = vec![vec![Vec::new(); BODY_BYTES.len()]; candidates.len()];
    for _ in 0..ROUNDS {
        for (s, body) in BODY_BYTES.iter().enumerate() {
            let message = vec![0xA5u8; FRAME_BYTES + body];
            for (c, (_, tag)) in candidates.iter().enumerate() {
                let started = Instant::now();
                for n in 0..iterations {
                    black_box(tag(n, black_box(&message)));
                }
                ns[c][s].push(started.elapsed().as_nanos() as f64 / iterations as f64);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<Vec<f64>> = ns
        .iter_mut()
        .map(|sizes| sizes.iter_mut().map(median).collect())
        .collect();
    for (c, (name, _)) in candidates.iter().enumerate() {
        print!("{name:<20}");
        for (ns, blake3_ns) in medians[c].iter().zip(&medians[0]) {
            print!("{ns:>9.0} ({:.2})", ns / blake3_ns);
        }
        println!();
    }
}
