//! Time-boxed fuzzing on stable Rust: proptest strategies run for a fixed budget
//! (`EMPREINTE_FUZZ_SECONDS`, 8 s per target by default) instead of a fixed number of
//! cases, with inputs made by mutating real, valid documents (byte edits spliced with
//! values that break parsers: huge numbers, negative ones, control characters, invalid
//! UTF-8). Every target reports how many inputs it tried; a failing input is printed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// The time each target runs for.
pub fn budget() -> Duration {
    std::env::var("EMPREINTE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(8))
}

/// Pieces spliced into documents: the values that break parsers and validators.
pub const DICTIONARY: &[&str] = &[
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-1",
    "-9223372036854775808",
    "0",
    "1e308",
    "1e400",
    "NaN",
    "inf",
    "-0.0",
    "\"\"",
    "null",
    "[]",
    "{}",
    "\u{0}",
    "\u{1b}[2J",
    "\r\n",
    "\t",
    "=HYPERLINK(\"x\")",
    "<img src=x onerror=1>",
    "é",
    "\u{feff}",
    ";",
    ",",
    "\"",
    "'",
    "2026-10-25 02:00",
    "25/10/2026",
    "99:99",
    "9999-99-99",
    "ND",
    "-",
    "1h",
    "0s",
    "999999999days",
    "[[site]]",
    "[limits]",
    "=",
];

/// One edit of a document.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Replace `len` bytes at a position (a fraction of the length) with a dictionary
    /// piece.
    Splice { at: u16, len: u8, piece: usize },
    /// Delete `len` bytes.
    Delete { at: u16, len: u8 },
    /// Insert raw bytes (invalid UTF-8 included).
    Insert { at: u16, bytes: Vec<u8> },
    /// Duplicate a slice (repeated lines, fields, keys).
    Duplicate { at: u16, len: u16 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<u16>(), 0u8..24, 0..DICTIONARY.len())
            .prop_map(|(at, len, piece)| Edit::Splice { at, len, piece }),
        2 => (any::<u16>(), 1u8..64).prop_map(|(at, len)| Edit::Delete { at, len }),
        2 => (any::<u16>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        1 => (any::<u16>(), 1u16..512).prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ]
}

fn position(at: u16, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (at as usize * len) / (u16::MAX as usize + 1)
    }
}

/// `base` with `edits` applied in order.
pub fn mutate(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut doc = base.to_vec();
    for e in edits {
        match e {
            Edit::Splice { at, len, piece } => {
                let p = position(*at, doc.len());
                let end = (p + *len as usize).min(doc.len());
                doc.splice(p..end, DICTIONARY[*piece].bytes());
            }
            Edit::Delete { at, len } => {
                let p = position(*at, doc.len());
                let end = (p + *len as usize).min(doc.len());
                doc.drain(p..end);
            }
            Edit::Insert { at, bytes } => {
                let p = position(*at, doc.len());
                doc.splice(p..p, bytes.iter().copied());
            }
            Edit::Duplicate { at, len } => {
                let p = position(*at, doc.len());
                let end = (p + *len as usize).min(doc.len());
                let copy = doc[p..end].to_vec();
                doc.splice(end..end, copy);
            }
        }
    }
    doc
}

/// Documents made from `seeds` by 1 to 8 edits, or (one in ten) random bytes.
pub fn documents(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len().max(1);
    prop_oneof![
        9 => (0..n, prop::collection::vec(edit(), 1..8)).prop_map(move |(i, edits)| {
            mutate(seeds.get(i).map(Vec::as_slice).unwrap_or_default(), &edits)
        }),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

/// Runs `check` on inputs from `strategy` for [`budget`] (at least `min_cases`);
/// panics with the input when `check` fails or panics. Gives the number of inputs.
pub fn run<S>(
    name: &str,
    strategy: S,
    min_cases: u64,
    check: impl Fn(&S::Value) -> Result<(), String>,
) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let budget = budget();
    let mut runner = TestRunner::default();
    let clock = Clock::start();
    let mut n = 0u64;
    while n < min_cases || clock.elapsed() < budget {
        let tree = match strategy.new_tree(&mut runner) {
            Ok(t) => t,
            Err(e) => panic!("{name}: cannot generate an input: {e}"),
        };
        let input = tree.current();
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: {e}\ninput: {input:?}"),
            Err(_) => panic!("{name}: panicked on input: {input:?}"),
        }
        n += 1;
    }
    eprintln!(
        "fuzz {name}: {n} inputs in {:.1} s",
        clock.elapsed().as_secs_f64()
    );
    if let Ok(path) = std::env::var("EMPREINTE_FUZZ_REPORT") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{name} {n}");
        }
    }
    n
}

/// The fuzzer's own stopwatch (the only clock read here).
#[allow(clippy::disallowed_types)]
struct Clock(std::time::SystemTime);

impl Clock {
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    fn start() -> Clock {
        Clock(std::time::SystemTime::now())
    }

    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    fn elapsed(&self) -> Duration {
        self.0.elapsed().unwrap_or_default()
    }
}
