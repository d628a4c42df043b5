//! Fake inference servers: each kind serves its real Prometheus text format (the metric
//! names, types, labels and histograms of the server's own source, see
//! `docs/inference.md`) on a loopback port, with counters the test advances by known
//! amounts. A server can be restarted (counters back to 0, a new process start time)
//! and made unreachable (connections are accepted and closed without an answer).
//!
//! ```no_run
//! use empreinte_testkit::inference::FakeInferenceServer;
//! use empreinte_shared::wire::InferenceServerKind;
//! let server = FakeInferenceServer::start(InferenceServerKind::Vllm, &["mistral-7b"]);
//! server.serve("mistral-7b", 3, 1_200, 400); // 3 requests, 1,200 input and 400 output tokens
//! let _url = server.url(); // http://127.0.0.1:PORT/metrics
//! ```

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use empreinte_shared::wire::InferenceServerKind;

/// One model's counters, as the server counts them since its start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCounters {
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

struct State {
    models: Vec<(String, ModelCounters)>,
    /// `process_start_time_seconds` (Python servers export it).
    start_time_s: u64,
    restarts: u64,
}

/// A fake server of one kind on `127.0.0.1`.
pub struct FakeInferenceServer {
    kind: InferenceServerKind,
    port: u16,
    state: Arc<Mutex<State>>,
    reachable: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeInferenceServer {
    /// Starts a server of `kind` serving `models` (counters at 0).
    pub fn start(kind: InferenceServerKind, models: &[&str]) -> FakeInferenceServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::on(listener, kind, models)
    }

    /// Starts a server on `listener` (a test that needs the port before the server).
    pub fn on(
        listener: TcpListener,
        kind: InferenceServerKind,
        models: &[&str],
    ) -> FakeInferenceServer {
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            models: models
                .iter()
                .map(|m| (m.to_string(), ModelCounters::default()))
                .collect(),
            start_time_s: 1_790_000_000,
            restarts: 0,
        }));
        let reachable = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, reachable, stop) = (state.clone(), reachable.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if !reachable.load(Ordering::SeqCst) {
                        drop(conn);
                        continue;
                    }
                    answer(conn, kind, &state);
                }
            })
        };
        FakeInferenceServer {
            kind,
            port,
            state,
            reachable,
            stop,
            thread: Some(thread),
        }
    }

    pub fn kind(&self) -> InferenceServerKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics URL: `http://127.0.0.1:PORT/metrics`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    /// `model` served `requests` requests of `input_tokens` input and `output_tokens`
    /// output tokens in all (no cached input token).
    pub fn serve(&self, model: &str, requests: u64, input_tokens: u64, output_tokens: u64) {
        self.serve_cached(model, requests, input_tokens, 0, output_tokens);
    }

    /// [`FakeInferenceServer::serve`] with `cached` of the input tokens from the cache.
    pub fn serve_cached(
        &self,
        model: &str,
        requests: u64,
        input_tokens: u64,
        cached: u64,
        output_tokens: u64,
    ) {
        let mut s = self.state.lock().unwrap();
        let i = match s.models.iter().position(|(m, _)| m == model) {
            Some(i) => i,
            None => {
                s.models.push((model.to_string(), ModelCounters::default()));
                s.models.len() - 1
            }
        };
        let c = &mut s.models[i].1;
        c.requests += requests;
        c.input_tokens += input_tokens;
        c.cached_input_tokens += cached;
        c.output_tokens += output_tokens;
    }

    /// The counters of `model` since the last restart.
    pub fn counters(&self, model: &str) -> ModelCounters {
        let s = self.state.lock().unwrap();
        s.models
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    /// The server restarts: every counter back to 0, a later process start time.
    pub fn restart(&self) {
        let mut s = self.state.lock().unwrap();
        for (_, c) in &mut s.models {
            *c = ModelCounters::default();
        }
        s.restarts += 1;
        s.start_time_s += 60;
    }

    /// While `false`, every connection is closed without an answer.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::SeqCst);
    }

    /// The metrics text as the server answers it now.
    pub fn text(&self) -> String {
        render(self.kind, &self.state.lock().unwrap())
    }
}

impl Drop for FakeInferenceServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut conn: TcpStream, kind: InferenceServerKind, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16_384 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, content_type, body) = {
        let s = state.lock().unwrap();
        let first_model = s.models.first().map(|(m, _)| m.clone()).unwrap_or_default();
        match path.as_str() {
            "/metrics" => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(kind, &s),
            ),
            "/info" if kind == InferenceServerKind::Tgi => (
                "200 OK",
                "application/json",
                format!(
                    r#"{{"model_id":"{first_model}","model_dtype":"torch.float16","max_input_tokens":4095,"version":"3.3.4"}}"#
                ),
            ),
            "/v1/models" => (
                "200 OK",
                "application/json",
                format!(
                    r#"{{"object":"list","data":[{{"id":"{first_model}","object":"model","owned_by":"llamacpp"}}]}}"#
                ),
            ),
            _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
        }
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The metrics text of `kind` for the state's counters.
fn render(kind: InferenceServerKind, s: &State) -> String {
    let mut out = String::new();
    match kind {
        InferenceServerKind::Vllm => vllm(&mut out, s),
        InferenceServerKind::Sglang => sglang(&mut out, s),
        InferenceServerKind::Tgi => tgi(&mut out, s),
        InferenceServerKind::Triton => triton(&mut out, s),
        InferenceServerKind::Llamacpp => llamacpp(&mut out, s),
        InferenceServerKind::Litellm => litellm(&mut out, s),
    }
    out
}

/// What `prometheus_client` (Python) writes for its process collector.
fn python_process(out: &mut String, s: &State) {
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}.25",
        s.start_time_s
    );
}

/// A Python counter: `_total` and `_created` samples, floats.
fn py_counter(out: &mut String, name: &str, help: &str, rows: &[(String, u64)]) {
    let _ = writeln!(
        out,
        "# HELP {name}_total {help}\n# TYPE {name}_total counter"
    );
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}_total{{{labels}}} {v}.0");
    }
    for (labels, _) in rows {
        let _ = writeln!(out, "{name}_created{{{labels}}} 1.79e+09");
    }
}

fn vllm(out: &mut String, s: &State) {
    python_process(out, s);
    let _ = writeln!(
        out,
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n# TYPE vllm:num_requests_running gauge"
    );
    for (m, _) in &s.models {
        let _ = writeln!(
            out,
            "vllm:num_requests_running{{engine=\"0\",model_name=\"{m}\"}} 0.0"
        );
    }
    let lab = |m: &str| format!("engine=\"0\",model_name=\"{m}\"");
    let rows = |f: fn(&ModelCounters) -> u64| -> Vec<(String, u64)> {
        s.models.iter().map(|(m, c)| (lab(m), f(c))).collect()
    };
    py_counter(
        out,
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        &rows(|c| c.cached_input_tokens),
    );
    py_counter(
        out,
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        &rows(|c| c.input_tokens),
    );
    py_counter(
        out,
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        &rows(|c| c.output_tokens),
    );
    // One series per finish reason (a third of the requests hit the length limit), so
    // that a reader must sum them.
    let mut success = Vec::new();
    for (m, c) in &s.models {
        for reason in ["stop", "length", "abort"] {
            let v = match reason {
                "stop" => c.requests - c.requests / 3,
                "length" => c.requests / 3,
                _ => 0,
            };
            success.push((
                format!("engine=\"0\",finished_reason=\"{reason}\",model_name=\"{m}\""),
                v,
            ));
        }
    }
    py_counter(
        out,
        "vllm:request_success",
        "Count of successfully processed requests.",
        &success,
    );
    histogram(
        out,
        "vllm:request_prompt_tokens",
        "Number of prefill tokens processed.",
        &s.models
            .iter()
            .map(|(m, c)| (lab(m), c.requests, c.input_tokens))
            .collect::<Vec<_>>(),
    );
}

fn sglang(out: &mut String, s: &State) {
    python_process(out, s);
    let lab = |m: &str| format!("model_name=\"{m}\"");
    let rows = |f: fn(&ModelCounters) -> u64| -> Vec<(String, u64)> {
        s.models.iter().map(|(m, c)| (lab(m), f(c))).collect()
    };
    py_counter(
        out,
        "sglang:prompt_tokens",
        "Number of prefill tokens processed.",
        &rows(|c| c.input_tokens),
    );
    py_counter(
        out,
        "sglang:generation_tokens",
        "Number of generation tokens processed.",
        &rows(|c| c.output_tokens),
    );
    py_counter(
        out,
        "sglang:cached_tokens",
        "Number of cached prompt tokens.",
        &rows(|c| c.cached_input_tokens),
    );
    py_counter(
        out,
        "sglang:num_requests",
        "Number of requests processed.",
        &rows(|c| c.requests),
    );
    let _ = writeln!(
        out,
        "# HELP sglang:cache_hit_rate The prefix cache hit rate.\n# TYPE sglang:cache_hit_rate gauge"
    );
    for (m, _) in &s.models {
        let _ = writeln!(out, "sglang:cache_hit_rate{{{}}} 0.0", lab(m));
    }
}

/// A histogram with `_bucket`, `_sum` and `_count`: `rows` are (labels, count, sum).
fn histogram(out: &mut String, name: &str, help: &str, rows: &[(String, u64, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, count, sum) in rows {
        let sep = if labels.is_empty() { "" } else { "," };
        // The TensorRT-LLM backend's token buckets (vLLM's differ; only sums are read).
        for le in ["10.0", "50.0", "100.0", "500.0", "1000.0"] {
            // Every observation in the largest finite bucket: the test checks sums.
            let v = if le == "1000.0" { *count } else { 0 };
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {v}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// TGI (Rust `metrics` crate and its Prometheus exporter): counters without `_total`,
/// integers, no model label (one model per server; `/info` names it).
fn tgi(out: &mut String, s: &State) {
    let total = s
        .models
        .iter()
        .fold(ModelCounters::default(), |mut a, (_, c)| {
            a.requests += c.requests;
            a.input_tokens += c.input_tokens;
            a.output_tokens += c.output_tokens;
            a
        });
    let _ = writeln!(
        out,
        "# TYPE tgi_request_count counter\ntgi_request_count {}",
        total.requests
    );
    let _ = writeln!(
        out,
        "# TYPE tgi_request_success counter\ntgi_request_success {}",
        total.requests
    );
    let _ = writeln!(out, "# TYPE tgi_queue_size gauge\ntgi_queue_size 0");
    let _ = writeln!(
        out,
        "# TYPE tgi_request_input_length histogram\ntgi_request_input_length_bucket{{le=\"+Inf\"}} {0}\ntgi_request_input_length_sum {1}\ntgi_request_input_length_count {0}",
        total.requests, total.input_tokens
    );
    let _ = writeln!(
        out,
        "# TYPE tgi_request_generated_tokens histogram\ntgi_request_generated_tokens_bucket{{le=\"+Inf\"}} {0}\ntgi_request_generated_tokens_sum {1}\ntgi_request_generated_tokens_count {0}",
        total.requests, total.output_tokens
    );
}

/// Triton with the TensorRT-LLM backend: per model and version; token lengths are
/// histograms.
fn triton(out: &mut String, s: &State) {
    let lab = |m: &str| format!("model=\"{m}\",version=\"1\"");
    let _ = writeln!(
        out,
        "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes\n# TYPE nv_inference_request_success counter"
    );
    for (m, c) in &s.models {
        let _ = writeln!(
            out,
            "nv_inference_request_success{{{}}} {}",
            lab(m),
            c.requests
        );
    }
    let _ = writeln!(
        out,
        "# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes\n# TYPE nv_inference_request_failure counter"
    );
    for (m, _) in &s.models {
        let _ = writeln!(
            out,
            "nv_inference_request_failure{{{},reason=\"BACKEND\"}} 0",
            lab(m)
        );
    }
    let rows = |kind: &str, f: fn(&ModelCounters) -> u64| -> Vec<(String, u64, u64)> {
        s.models
            .iter()
            .map(|(m, c)| {
                (
                    format!("{},response_metric_type=\"{kind}\"", lab(m)),
                    c.requests,
                    f(c),
                )
            })
            .collect()
    };
    histogram(
        out,
        "nv_llm_input_token_len",
        "TRT LLM response metrics",
        &rows("total_input_tokens", |c| c.input_tokens),
    );
    histogram(
        out,
        "nv_llm_output_token_len",
        "TRT LLM response metrics",
        &rows("total_output_tokens", |c| c.output_tokens),
    );
}

/// llama.cpp `llama-server --metrics`: one model, no label, no request counter.
fn llamacpp(out: &mut String, s: &State) {
    let (input, output) = s.models.iter().fold((0, 0), |(i, o), (_, c)| {
        (i + c.input_tokens, o + c.output_tokens)
    });
    let _ = writeln!(
        out,
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total {input}"
    );
    let _ = writeln!(
        out,
        "# HELP llamacpp:prompt_seconds_total Prompt process time\n# TYPE llamacpp:prompt_seconds_total counter\nllamacpp:prompt_seconds_total 1.5"
    );
    let _ = writeln!(
        out,
        "# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total {output}"
    );
    let _ = writeln!(
        out,
        "# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 0"
    );
}

/// LiteLLM proxy: per requested model, API key, team and user.
fn litellm(out: &mut String, s: &State) {
    python_process(out, s);
    let lab = |m: &str, with_model: bool| {
        let model = if with_model {
            format!(",model=\"{m}\"")
        } else {
            String::new()
        };
        format!(
            "api_key_alias=\"None\",end_user=\"None\",hashed_api_key=\"88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b\"{model},requested_model=\"{m}\",team=\"None\",team_alias=\"None\",user=\"default_user_id\""
        )
    };
    let rows = |f: fn(&ModelCounters) -> u64, with_model: bool| -> Vec<(String, u64)> {
        s.models
            .iter()
            .map(|(m, c)| (lab(m, with_model), f(c)))
            .collect()
    };
    py_counter(
        out,
        "litellm_proxy_total_requests_metric",
        "Total number of requests made to the proxy server - track number of client side requests",
        &s.models
            .iter()
            .map(|(m, c)| (format!("{},status_code=\"200\"", lab(m, false)), c.requests))
            .collect::<Vec<_>>(),
    );
    py_counter(
        out,
        "litellm_input_tokens_metric",
        "Total number of input tokens from LLM requests",
        &rows(|c| c.input_tokens, true),
    );
    py_counter(
        out,
        "litellm_output_tokens_metric",
        "Total number of output tokens from LLM requests",
        &rows(|c| c.output_tokens, true),
    );
}
