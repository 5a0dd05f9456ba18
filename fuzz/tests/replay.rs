//! Every fuzz target, in `cargo test`: its seeds (`fuzz/seeds/<target>/`), then a
//! fixed number of deterministic mutations of them (bit flips, byte changes,
//! insertions, deletions, splices, JSON-ish tokens). It is the short run CI gives
//! each target; the long, coverage-guided runs are `cargo fuzz` (docs/security.md).
//!
//! `FUZZ_REPLAY_ITERATIONS` (default 2,000 per target) sets how many mutations run.
//! A failing input is printed in hex, ready to save as a seed and replay.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// xorshift64*: deterministic, so a failure here fails the same way every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Tokens that tend to matter to the decoders under test.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"18446744073709551616",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"%",
    b"%00",
    b"&",
    b"=",
    b"\n",
    b"\r\n",
    b"@",
    b"#EXT#",
    b"xn--",
    b"[SMTP:",
    b"EX:/o=",
    b".",
    b"/",
    b"..",
    b"\xff\xfe",
    b"\xe2\x80\xae",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(input.len() + 1);
                input.insert(at, rng.next() as u8);
            }
            3 if !input.is_empty() => {
                let at = rng.below(input.len());
                let len = rng.below(input.len() - at).min(64) + 1;
                input.drain(at..(at + len).min(input.len()));
            }
            4 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(input.len() + 1);
                input.splice(at..at, token.iter().copied());
            }
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let len = rng.below(other.len() - from) + 1;
                    let at = rng.below(input.len() + 1);
                    input.splice(at..at, other[from..from + len].iter().copied());
                }
            }
            _ if !input.is_empty() => {
                // Duplicate a chunk: repeated members, nested structures.
                let at = rng.below(input.len());
                let len = rng.below(input.len() - at).min(128) + 1;
                let chunk: Vec<u8> = input[at..at + len].to_vec();
                input.splice(at..at, chunk);
            }
            _ => input.push(rng.next() as u8),
        }
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seeds of {target} in {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    files.sort();
    let mut seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|path| std::fs::read(path).expect("a readable seed"))
        .collect();
    seeds.push(Vec::new());
    seeds
}

fn iterations() -> usize {
    std::env::var("FUZZ_REPLAY_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

fn replay(target: &str, body: fn(&[u8])) {
    let seeds = seeds(target);
    assert!(seeds.len() > 1, "{target} has seeds");
    let run = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| body(input))).is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("fuzz target {target} failed on input (hex) {hex}");
        }
    };
    for seed in &seeds {
        run(seed);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
    for _ in 0..iterations() {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &seeds, &mut input);
        run(&input);
    }
}

#[test]
fn queue_message() {
    replay("queue_message", fwdwatch_fuzz::queue_message);
}

#[test]
fn exchange_answer() {
    replay("exchange_answer", fwdwatch_fuzz::exchange_answer);
}

#[test]
fn graph_answer() {
    replay("graph_answer", fwdwatch_fuzz::graph_answer);
}

#[test]
fn resolve_targets() {
    replay("resolve_targets", fwdwatch_fuzz::resolve_targets);
}

#[test]
fn link_token() {
    replay("link_token", fwdwatch_fuzz::link_token);
}

#[test]
fn slack_interaction() {
    replay("slack_interaction", fwdwatch_fuzz::slack_interaction);
}

#[test]
fn api_command() {
    replay("api_command", fwdwatch_fuzz::api_command);
}

#[test]
fn actioner_http() {
    replay("actioner_http", fwdwatch_fuzz::actioner_http);
}

#[test]
fn audit_content() {
    replay("audit_content", fwdwatch_fuzz::audit_content);
}

/// The harness itself: a target that fails is reported, with its input.
#[test]
fn a_failing_target_is_reported() {
    fn picky(data: &[u8]) {
        assert!(!data.contains(&b'}'), "no closing brace");
    }
    let outcome = catch_unwind(|| replay("queue_message", picky));
    assert!(outcome.is_err(), "the harness must surface a failing input");
}
