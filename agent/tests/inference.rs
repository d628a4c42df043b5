//! The agent reads inference servers: fake servers of every kind speak their real text
//! format on loopback, the test advances their counters by known amounts, and what the
//! agent puts in its batches (wire v2 inference records) must count them exactly:
//! through restarts, outages and several models behind one process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use empreinte_agent::clock::MonotonicClock;
use empreinte_agent::config::{AgentConfig, InferenceEntry};
use empreinte_agent::inference::{Inference, ServerInfo, records};
use empreinte_agent::push::batcher::Batcher;
use empreinte_shared::wire::{Batch, InferenceServerKind, Limits};
use empreinte_testkit::inference::FakeInferenceServer;
use empreinte_testkit::wait::{PATIENCE, wait_for, wait_until};

/// What the batches say one model counted, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counted {
    requests: Option<u64>,
    input: Option<u64>,
    cached: Option<u64>,
    output: Option<u64>,
    gap_ms: u64,
    resets: u32,
    allocated: bool,
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// The agent's inference reader, cycles that take its counts into batches as the
/// sampling loop does, and the batches sealed.
struct Harness {
    inference: Inference,
    clock: MonotonicClock,
    batcher: Batcher,
    batches: Vec<Batch>,
    last_ms: u64,
}

fn config(kind: InferenceServerKind, url: &str, model: Option<&str>) -> AgentConfig {
    let mut c = AgentConfig::default();
    c.inference_scrape.interval = Duration::from_millis(100);
    c.inference_scrape.timeout = Duration::from_millis(100);
    c.inference_scrape.discover = false;
    c.inference.push(InferenceEntry {
        kind: kind.as_str().into(),
        url: url.into(),
        project: Some("chatbot".into()),
        model: model.map(str::to_string),
    });
    c.validate("test").unwrap();
    c
}

impl Harness {
    fn start(config: &AgentConfig) -> Harness {
        let clock = MonotonicClock::start();
        let inference = Inference::start(config, clock).unwrap().unwrap();
        let now = clock.anchor().unix_ms(clock.now());
        Harness {
            inference,
            clock,
            batcher: Batcher::new("0123456789abcdef0123456789abcdef".into(), 200),
            batches: Vec::new(),
            last_ms: now,
        }
    }

    fn server(&self) -> ServerInfo {
        self.inference.servers().0.remove(0)
    }

    /// Waits until the reader made `n` more reads of the server (good or failed).
    fn wait_reads(&self, n: u64) {
        let before = self.server().scrapes_total;
        wait_for("more reads of the server", PATIENCE, || {
            self.server().scrapes_total >= before + n
        });
    }

    /// One sampling cycle: what was counted since the last one goes into the batches.
    fn cycle(&mut self) {
        let end = self
            .clock
            .anchor()
            .unix_ms(self.clock.now())
            .max(self.last_ms + 1);
        let takes = self.inference.take(end);
        let recs = records::build(&takes, self.last_ms, end, &|_| None, "unassigned");
        self.inference.counted(&recs);
        let length = end - self.last_ms;
        self.last_ms = end;
        let sealed = self
            .batcher
            .fold_all(end, length, [], &[], recs, &mut |_| 0);
        self.batches.extend(sealed);
    }

    /// Every batch, the open one sealed, each checked as a collector would.
    fn sealed(&mut self) -> Vec<Batch> {
        self.batches.extend(self.batcher.seal());
        for b in &self.batches {
            let problems = b.problems(&Limits::default());
            assert!(problems.is_empty(), "{problems:?}");
        }
        self.batches.clone()
    }

    fn counted(&mut self) -> BTreeMap<String, Counted> {
        let mut out: BTreeMap<String, Counted> = BTreeMap::new();
        for b in self.sealed() {
            for r in &b.inference {
                assert_eq!(r.project, "chatbot");
                let c = out.entry(r.model.clone()).or_default();
                c.requests = add(c.requests, r.requests);
                c.input = add(c.input, r.input_tokens);
                c.cached = add(c.cached, r.cached_input_tokens);
                c.output = add(c.output, r.output_tokens);
                c.gap_ms += r.gap_ms;
                c.resets += r.resets;
                c.allocated |= r.allocated;
            }
        }
        out
    }

    /// Cycles until the batches hold `output` output tokens for `model`, then a few
    /// reads more (nothing is counted twice).
    fn cycle_until_output(&mut self, model: &str, output: u64) -> BTreeMap<String, Counted> {
        wait_until("the counts reach the batches", PATIENCE, || {
            self.cycle();
            self.wait_reads(1);
            let mut copy = Harness::counted_of(&self.batches, &self.batcher);
            (copy.remove(model).and_then(|c| c.output) == Some(output)).then_some(())
        });
        self.wait_reads(3);
        self.cycle();
        self.counted()
    }

    fn counted_of(batches: &[Batch], batcher: &Batcher) -> BTreeMap<String, Counted> {
        let mut all = batches.to_vec();
        all.extend(batcher.open_batch());
        let mut out: BTreeMap<String, Counted> = BTreeMap::new();
        for b in all {
            for r in &b.inference {
                let c = out.entry(r.model.clone()).or_default();
                c.output = add(c.output, r.output_tokens);
            }
        }
        out
    }
}

/// Each kind: requests and tokens served after the agent started are counted exactly,
/// with `None` for what the server does not count.
#[test]
fn every_kind_is_counted_exactly() {
    for kind in InferenceServerKind::ALL {
        let server = FakeInferenceServer::start(kind, &["mistral-7b"]);
        // Served before the agent watched: never counted.
        server.serve_cached("mistral-7b", 5, 500, 100, 50);
        // TGI and llama.cpp do not name their model in the counters: their info
        // endpoint does.
        let mut h = Harness::start(&config(kind, &server.url(), None));
        wait_for("a first good read", PATIENCE, || h.server().up);
        let errors_before = h.server().scrape_errors_total;
        for step in 1..=5u64 {
            server.serve_cached("mistral-7b", step, 1_000 * step, 10 * step, 97 * step);
            h.cycle();
        }
        let counted = h.cycle_until_output("mistral-7b", 97 * 15);
        let c = &counted["mistral-7b"];
        let (requests, cached) = match kind {
            InferenceServerKind::Llamacpp => (None, None),
            InferenceServerKind::Vllm | InferenceServerKind::Sglang => (Some(15), Some(150)),
            _ => (Some(15), None),
        };
        assert_eq!(
            (c.requests, c.input, c.cached, c.output, c.resets),
            (requests, Some(15_000), cached, Some(97 * 15), 0),
            "{kind}: {counted:?}"
        );
        assert_eq!(counted.len(), 1, "{kind}: one model: {counted:?}");
        // A gap is recorded exactly when a read failed (on a loaded machine a read can
        // pass its 100 ms timeout); the counts above stay exact either way.
        let errors = h.server().scrape_errors_total - errors_before;
        assert_eq!(
            c.gap_ms > 0,
            errors > 0,
            "{kind}: gap {} ms, {errors} failed reads",
            c.gap_ms
        );
    }
}

/// A restart mid-run (counters back to 0): what was counted before and after is
/// counted once, and the reset is recorded; a Python server's new start time shows a
/// restart even when its counters already passed their old values.
#[test]
fn a_restart_mid_run_is_counted_exactly() {
    for kind in [InferenceServerKind::Vllm, InferenceServerKind::Tgi] {
        let server = FakeInferenceServer::start(kind, &["m"]);
        let mut h = Harness::start(&config(kind, &server.url(), Some("m")));
        wait_for("a first good read", PATIENCE, || h.server().up);
        server.serve("m", 4, 400, 100);
        h.cycle_until_output("m", 100);
        server.restart();
        let expected = if kind == InferenceServerKind::Vllm {
            // Down while it restarts and serves more than before: only the exported
            // start time tells.
            server.set_reachable(false);
            h.wait_reads(2);
            server.serve("m", 9, 900, 250);
            server.set_reachable(true);
            350
        } else {
            server.serve("m", 1, 100, 30);
            130
        };
        let counted = h.cycle_until_output("m", expected);
        let c = &counted["m"];
        assert_eq!(c.output, Some(expected), "{kind}: {counted:?}");
        assert!(
            c.resets >= 1,
            "{kind}: the restart is recorded: {counted:?}"
        );
    }
}

/// A server unreachable for a while: the time is recorded as a gap, and the counts
/// served meanwhile arrive with the next good read, exactly.
#[test]
fn an_unreachable_server_leaves_a_gap_and_exact_counts() {
    let server = FakeInferenceServer::start(InferenceServerKind::Sglang, &["qwen"]);
    let mut h = Harness::start(&config(InferenceServerKind::Sglang, &server.url(), None));
    wait_for("a first good read", PATIENCE, || h.server().up);
    server.serve("qwen", 2, 200, 20);
    h.cycle_until_output("qwen", 20);
    server.set_reachable(false);
    let failed_before = h.server().scrape_errors_total;
    for _ in 0..10 {
        server.serve("qwen", 1, 100, 11);
        h.wait_reads(1);
        h.cycle();
    }
    let down = h.server();
    assert!(
        !down.up && down.scrape_errors_total >= failed_before + 8,
        "{down:?}"
    );
    server.set_reachable(true);
    let counted = h.cycle_until_output("qwen", 20 + 110);
    let c = &counted["qwen"];
    assert_eq!(
        (c.requests, c.input, c.output),
        (Some(12), Some(1_200), Some(130)),
        "{counted:?}"
    );
    // Ten reads failed, 100 ms apart at least.
    assert!(
        c.gap_ms >= 400,
        "the outage is recorded as a gap: {counted:?}"
    );
}

/// A proxy serving two models: each counted on its own, both flagged as allocated.
#[test]
fn two_models_behind_one_process_are_flagged() {
    let server = FakeInferenceServer::start(InferenceServerKind::Litellm, &["gpt-4o", "mistral"]);
    let mut h = Harness::start(&config(InferenceServerKind::Litellm, &server.url(), None));
    wait_for("a first good read", PATIENCE, || h.server().up);
    server.serve("gpt-4o", 3, 300, 90);
    server.serve("mistral", 1, 100, 30);
    h.cycle_until_output("gpt-4o", 90);
    let counted = h.cycle_until_output("mistral", 30);
    assert_eq!(counted["gpt-4o"].requests, Some(3));
    assert_eq!(counted["mistral"].requests, Some(1));
    assert!(counted.values().all(|c| c.allocated), "{counted:?}");
    let info = h.server();
    let models: Vec<&str> = info.models.iter().map(|m| &**m).collect();
    assert_eq!(models, ["gpt-4o", "mistral"]);
    // The agent's own series show the same counts.
    let text = empreinte_agent::metrics::render_all(
        &empreinte_agent::sampler::HostState::default(),
        &empreinte_agent::metrics::ExportInfo {
            interval_seconds: 1.0,
        },
        None,
        h.inference.families(),
    )
    .unwrap();
    for line in [
        "empreinte_inference_requests_total{project=\"chatbot\",model=\"gpt-4o\",server=\"litellm\"} 3",
        "empreinte_inference_tokens_total{project=\"chatbot\",model=\"mistral\",server=\"litellm\",kind=\"output\"} 30",
        &format!(
            "empreinte_inference_server_up{{server=\"litellm\",url=\"{}\"}} 1",
            server.url()
        ),
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // LiteLLM keeps no count of cached input tokens: no series, rather than a 0.
    assert!(!text.contains("kind=\"cached_input\""), "{text}");
}
