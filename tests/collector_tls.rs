#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! HTTPS end to end with a CA made at test time (rcgen): the collector serves TLS from
//! `--tls-cert/--tls-key`, the agent pushes to it with the README's configuration and
//! `ca_file`, `report --collector https://…` reads from it with `--collector-ca`; without
//! the CA both say what is wrong and which flag fixes it; SIGHUP swaps the certificate
//! without closing the listener (issue 10, item 1).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread::sleep;
use std::time::Duration;

use common::{Agent, CollectorCmd, assert_success, create_token, free_port, run};
use empreinte_testkit::powercap::FakePowercap;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA, and a server certificate for `localhost`, `collector` and 127.0.0.1 that it
/// signed, written as PEM files in `dir` with the prefix `name`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "collector".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn https_client(ca: Option<&Path>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(empreinte_agent::push::tls::client_config(ca).unwrap())
        .build()
        .new_agent()
}

fn get(client: &ureq::Agent, url: &str, token: &str) -> Result<(u16, String), String> {
    let mut resp = client
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| empreinte_agent::push::tls::explain(&e, "--collector-ca FILE"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_to_string().unwrap_or_default()))
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    empreinte_testkit::wait::wait_for(what, empreinte_testkit::wait::PATIENCE, cond);
}

struct Collector {
    child: Child,
    log: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's collector and agent configuration lines, as written there.
fn readme_lines() -> (String, String) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let collector = "[push] collector = \"https://collector:9820\"";
    assert!(
        readme.contains(collector),
        "the README no longer shows {collector}"
    );
    for key in ["[tls] cert_file", "key_file", "ca_file", "--collector-ca"] {
        assert!(
            readme.contains(key),
            "the README does not say how to set {key}"
        );
    }
    (
        "collector = \"https://collector:9820\"".to_string(),
        "https://collector:9820".to_string(),
    )
}

#[test]
fn agents_and_reports_reach_an_https_collector_with_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let pki = make_pki(dir.path(), "first");
    let reader = create_token(&data, "read", None);
    let token = create_token(&data, "agent", Some("tls-host"));
    let port = free_port();
    let log = data.join("collector.log");
    let mut collector = Collector {
        child: CollectorCmd::new(&data, port)
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .log(&log)
            .spawn(),
        log,
    };
    let base = format!("https://localhost:{port}");
    let trusting = https_client(Some(&pki.ca));
    wait_for("the collector answers over TLS", || {
        assert!(
            collector.child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&collector.log).unwrap_or_default()
        );
        get(&trusting, &format!("{base}/healthz"), "").is_ok()
    });
    // Plain HTTP is not served on the TLS port.
    assert!(
        ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
            .call()
            .is_err()
    );
    // Without the CA, the client says what is wrong and what to give.
    let err = get(&https_client(None), &format!("{base}/healthz"), "").unwrap_err();
    assert!(
        err.contains("not trusted") && err.contains("--collector-ca"),
        "{err}"
    );

    // The agent pushes with the README's configuration, the collector's address being
    // this test's.
    let (line, url) = readme_lines();
    let token_file = dir.path().join("agent.token");
    std::fs::write(&token_file, &token).unwrap();
    let agent_toml = |name: &str, ca: Option<&Path>| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[push]\n{}\ntoken_file = \"{}\"\nagent_id = \"tls-host\"\nbatch_interval = \"1s\"\nspool_dir = \"{}\"\n{}",
                line.replace("collector:9820", &format!("localhost:{port}")),
                token_file.display(),
                dir.path().join(format!("{name}-spool")).display(),
                ca.map(|c| format!("ca_file = \"{}\"\n", c.display()))
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        path
    };
    // A host that draws power on its first package until the test ends.
    let mut fp = FakePowercap::intel_two_socket();
    let root = fp.root().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let zone = fp.zone("intel-rapl:0");
                fp.advance_uj(&zone, 5_000_000);
                sleep(Duration::from_millis(50));
            }
            fp
        })
    };
    let spawn_agent = |cfg: &Path| {
        Agent::spawn(&[
            "--config",
            cfg.to_str().unwrap(),
            "--interval",
            "200ms",
            "--powercap-root",
            root.to_str().unwrap(),
            "--nvml-library",
            "off",
        ])
    };
    // Without the CA: pushes fail, and the log names the certificate problem and the flag.
    let untrusting = spawn_agent(&agent_toml("untrusting", None));
    wait_for("a failed push", || {
        common::value(
            &untrusting.samples(),
            "empreinte_push_batches_total",
            &[("outcome", "failed")],
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    let (_, err) = untrusting.terminate();
    assert!(
        err.contains("not trusted") && err.contains("--collector-ca"),
        "{err}"
    );
    // With it (here through --collector-ca): stored.
    let cfg = agent_toml("trusting", None);
    let agent = Agent::spawn(&[
        "--config",
        cfg.to_str().unwrap(),
        "--collector-ca",
        pki.ca.to_str().unwrap(),
        "--interval",
        "200ms",
        "--powercap-root",
        root.to_str().unwrap(),
        "--nvml-library",
        "off",
    ]);
    wait_for("the agent's batches stored over TLS", || {
        let (status, body) = get(&trusting, &format!("{base}/api/v1/agents"), &reader).unwrap();
        status == 200 && body.contains("tls-host")
    });
    drop(agent);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(load.join().unwrap());
    assert_eq!(url, "https://collector:9820");

    // report --collector https://… with and without the CA.
    let args = |ca: Option<&Path>| {
        let mut a = vec![
            "report".to_string(),
            "--collector".into(),
            base.clone(),
            "--token-file".into(),
            dir.path().join("read.token").display().to_string(),
            "--format".into(),
            "json".into(),
        ];
        if let Some(ca) = ca {
            a.extend(["--collector-ca".into(), ca.display().to_string()]);
        }
        a
    };
    std::fs::write(dir.path().join("read.token"), &reader).unwrap();
    let a = args(None);
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not trusted") && stderr.contains("--collector-ca"),
        "{stderr}"
    );
    let a = args(Some(&pki.ca));
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.is_object());

    // SIGHUP: a certificate from another CA replaces the first, on the same listener.
    let second = make_pki(dir.path(), "second");
    std::fs::copy(&second.cert, &pki.cert).unwrap();
    std::fs::copy(&second.key, &pki.key).unwrap();
    let sent = Command::new("kill")
        .args(["-HUP", &collector.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let trusting_second = https_client(Some(&second.ca));
    wait_for("the new certificate served", || {
        get(&trusting_second, &format!("{base}/healthz"), "").is_ok()
    });
    // A new connection trusting only the first CA is refused (pooled ones keep theirs).
    assert!(get(&https_client(Some(&pki.ca)), &format!("{base}/healthz"), "").is_err());
    assert!(collector.child.try_wait().unwrap().is_none());
    let log = std::fs::read_to_string(&collector.log).unwrap();
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    // A broken file on reload keeps the working certificate.
    std::fs::write(&pki.key, "not a key").unwrap();
    Command::new("kill")
        .args(["-HUP", &collector.child.id().to_string()])
        .status()
        .unwrap();
    wait_for("the failed reload logged", || {
        std::fs::read_to_string(&collector.log)
            .unwrap()
            .contains("TLS certificate not reloaded")
    });
    assert!(
        get(
            &https_client(Some(&second.ca)),
            &format!("{base}/healthz"),
            ""
        )
        .is_ok()
    );
    collector.child.kill().unwrap();
}

#[test]
fn plain_http_on_a_network_address_warns_that_tokens_travel_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("collector.log");
    let mut c = Collector {
        child: CollectorCmd::new(dir.path(), port)
            .listen(&format!("0.0.0.0:{port}"))
            .log(&log)
            .spawn(),
        log,
    };
    wait_for("the start logged", || {
        std::fs::read_to_string(&c.log)
            .unwrap()
            .contains("collector serving")
    });
    let text = std::fs::read_to_string(&c.log).unwrap();
    assert!(
        text.contains("WARN") && text.contains("travel in clear"),
        "{text}"
    );
    c.child.kill().unwrap();
}

#[test]
fn a_client_ca_makes_client_certificates_required() {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let server = make_pki(dir.path(), "server");
    let clients = make_pki(dir.path(), "clients");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
            server.cert.display(),
            server.key.display(),
            clients.ca.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let log = data.join("collector.log");
    let mut collector = Collector {
        child: CollectorCmd::new(&data, port)
            .arg("--config")
            .arg(&config)
            .log(&log)
            .spawn(),
        log,
    };
    let roots = RootCerts::Specific(std::sync::Arc::new(vec![
        Certificate::from_pem(&std::fs::read(&server.ca).unwrap()).unwrap(),
    ]));
    let client = |cert: Option<&Pki>| {
        let mut tls = TlsConfig::builder().root_certs(roots.clone());
        if let Some(c) = cert {
            tls = tls.client_cert(Some(ClientCert::new_with_certs(
                &[Certificate::from_pem(&std::fs::read(&c.cert).unwrap()).unwrap()],
                PrivateKey::from_pem(&std::fs::read(&c.key).unwrap()).unwrap(),
            )));
        }
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(tls.build())
            .build()
            .new_agent()
    };
    let url = format!("https://localhost:{port}/healthz");
    wait_for("the collector answers a client with a certificate", || {
        assert!(
            collector.child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&collector.log).unwrap_or_default()
        );
        get(&client(Some(&clients)), &url, "").is_ok()
    });
    // Without a certificate, or with one from another CA: no answer.
    assert!(get(&client(None), &url, "").is_err());
    assert!(get(&client(Some(&server)), &url, "").is_err());
    collector.child.kill().unwrap();
}
