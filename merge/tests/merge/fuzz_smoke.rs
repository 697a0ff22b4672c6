//! The stable-toolchain stand-in for `cargo fuzz`: the same entry points as
//! the fuzz targets in `fuzz/`, fed a fixed budget of deterministic
//! mutations of real and hand-made traces (bit flips, cuts, splices, stray
//! JSON tokens, gzip). Nothing may panic, and every `.pftrace` produced must
//! pass the test decoder's structural checks.

use crate::common;

use std::io::Write;

use rankline_merge::fuzzing;

/// Iterations per seed; raise with RANKLINE_FUZZ_ITERATIONS for a longer run.
fn iterations() -> usize {
    std::env::var("RANKLINE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let jax = common::read_gz(
        &common::jax_run_dir(&common::fixtures().join("jax_multi2/proc0")).join("vm.trace.json.gz"),
    );
    vec![
        jax.as_bytes()[..jax.len().min(6000)].to_vec(),
        jax.as_bytes()[jax.len().saturating_sub(3000)..].to_vec(),
        br#"{"traceEvents":[{"ph":"B","pid":1,"tid":1,"ts":1,"name":"a","args":{"k":[1,{"x":"\u00e9"}]}},
            {"ph":"X","pid":"p","tid":"t","ts":"2.5","dur":1e-3,"name":"b\"c"},{"ph":"E","pid":1,"tid":1,"ts":3},
            {"ph":"i","ts":2,"name":"i"},{"ph":"M","pid":1,"name":"process_name","args":{"name":"n"}},{}],
            "baseTimeNanoseconds":1763850000123456789}"#
            .to_vec(),
        br#"[{"ph":"X","ts":0,"dur":10,"name":"a"},{"ph":"X","ts":5,"dur":10,"name":"b"},{"ph":"X","ts":5,"dur":0,"name":"c"}]"#
            .to_vec(),
    ]
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    const TOKENS: [&[u8]; 12] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b"\\",
        b",",
        b":",
        b"1e999",
        b"-0.0005",
        b"\xff",
        b"\"ph\":\"X\"",
    ];
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => bytes.truncate(at),
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            3 if !bytes.is_empty() => {
                let from = rng.below(bytes.len());
                let len = rng.below(64).min(bytes.len() - from);
                let piece = bytes[from..from + len].to_vec();
                bytes.splice(at..at, piece);
            }
            _ => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
    if rng.below(4) == 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        bytes = gz.finish().unwrap();
        if rng.below(2) == 0 && bytes.len() > 12 {
            let i = 10 + rng.below(bytes.len() - 10);
            bytes[i] ^= 0x55;
        }
    }
    bytes
}

#[test]
fn mutated_traces_never_panic_and_always_give_valid_output() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut converted = 0;
    for seed in seeds() {
        for _ in 0..iterations() {
            let input = mutate(&mut rng, &seed);
            fuzzing::read_elements(&input);
            fuzzing::to_json(&input);
            if let Some(pftrace) = fuzzing::to_pftrace(&input) {
                common::decode(&pftrace);
                converted += 1;
            }
            if let Ok(text) = std::str::from_utf8(&input) {
                fuzzing::scan_json(text);
                let cut = rng.below(text.len().min(40) + 1);
                if let Some(number) = text.get(..cut) {
                    fuzzing::micros_round_trip(number);
                }
            }
        }
    }
    assert!(
        converted * 10 > iterations(),
        "enough mutants stay valid to reach the encoder: {converted}"
    );
}

fn xplane_seeds() -> Vec<Vec<u8>> {
    let real = std::fs::read(
        common::jax_run_dir(&common::fixtures().join("jax_single")).join("vm.xplane.pb"),
    )
    .unwrap();
    let synthetic = |metadata| {
        let spec = rankline_xplane::synth::SynthSpec {
            device_planes: 1,
            events_per_line: 24,
            host_events: 12,
            aggregate_every: 7,
            overlap_every: 2,
            metadata,
            ..Default::default()
        };
        let mut bytes = Vec::new();
        rankline_xplane::synth::write_synthetic_space(&mut bytes, &spec).unwrap();
        bytes
    };
    vec![
        real,
        synthetic(rankline_xplane::encode::MetadataPlacement::AfterLines),
        synthetic(rankline_xplane::encode::MetadataPlacement::BeforeLines),
    ]
}

#[test]
fn mutated_xplanes_never_panic_and_always_give_valid_output() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut converted = 0;
    for seed in xplane_seeds() {
        assert!(fuzzing::xplane_to_pftrace(&seed).is_some(), "seeds convert");
        for _ in 0..iterations() {
            let input = mutate(&mut rng, &seed);
            fuzzing::xplane_elements(&input);
            if let Some(pftrace) = fuzzing::xplane_to_pftrace(&input) {
                common::decode(&pftrace);
                converted += 1;
            }
        }
    }
    assert!(
        converted * 10 > iterations(),
        "enough mutants stay valid to reach the encoder: {converted}"
    );
}

#[test]
fn numbers_round_trip() {
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let digits: String = (0..1 + rng.below(22))
            .map(|_| char::from(b"0123456789.-e+"[rng.below(14)]))
            .collect();
        fuzzing::micros_round_trip(&digits);
    }
}
