//! A fake Kubernetes API server (or kubelet): a loopback HTTP server that answers every
//! GET with a pod list the test sets, and records the requests it got.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pod for the fake list.
pub struct FakePod<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
}

/// The fake server; it stops with the test process.
pub struct FakeApiServer {
    pub url: String,
    body: Arc<Mutex<String>>,
    requests: Arc<Mutex<Vec<String>>>,
    delay: Arc<Mutex<Duration>>,
}

impl FakeApiServer {
    pub fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new("{\"items\":[]}".to_string()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (b, r, d) = (body.clone(), requests.clone(), delay.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                r.lock().unwrap().push(head);
                // A slow API server: the answer comes after the delay (a stall the
                // client must not wait for on its sampling path).
                let stall = *d.lock().unwrap();
                if !stall.is_zero() {
                    std::thread::sleep(stall);
                }
                let body = b.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeApiServer {
            url,
            body,
            requests,
            delay,
        }
    }

    /// Every answer from now on comes `delay` after the request.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Sets the pod list served from now on.
    pub fn set_pods(&self, pods: &[FakePod]) {
        let items: Vec<String> = pods
            .iter()
            .map(|p| {
                let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
                format!(
                    "{{\"metadata\":{{\"uid\":\"{}\",\"namespace\":\"{}\",\"name\":\"{}\",\"labels\":{{{}}}}}}}",
                    p.uid,
                    p.namespace,
                    p.name,
                    labels.join(",")
                )
            })
            .collect();
        *self.body.lock().unwrap() =
            format!("{{\"kind\":\"PodList\",\"items\":[{}]}}", items.join(","));
    }

    /// Serves this pod list from now on: `items`, a JSON array of pod objects as the API
    /// server writes them (metadata with annotations, status with the pod IP…).
    pub fn set_items_json(&self, items: &str) {
        *self.body.lock().unwrap() = format!("{{\"kind\":\"PodList\",\"items\":{items}}}");
    }

    /// The request heads received so far (request line and headers).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}
