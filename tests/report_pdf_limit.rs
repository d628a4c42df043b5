#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! PDF reports cannot start a browser per request: with `limits.max_pdf_renders = 1`,
//! 8 parallel PDF requests run at most one Chromium at any moment; the others wait their
//! turn (issue 10, item 2). Chromium is a stand-in script that records how many copies
//! of itself run at once and writes a PDF where it is asked to.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, create_token, free_port};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn parallel_pdf_requests_run_at_most_the_configured_number_of_chromiums() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let reader = create_token(&data, "read", None);
    let running = dir.path().join("running");
    std::fs::create_dir_all(&running).unwrap();
    let counts = dir.path().join("counts");
    let fake = dir.path().join("fake-chromium");
    std::fs::write(
        &fake,
        format!(
            r#"#!/bin/sh
touch '{running}'/run.$$
ls '{running}' | grep -c '^run\.' >> '{counts}'
sleep 0.3
for a in "$@"; do
  case "$a" in --print-to-pdf=*) printf '%%PDF-1.4 stand-in' > "${{a#--print-to-pdf=}}";; esac
done
rm '{running}'/run.$$
"#,
            running = running.display(),
            counts = counts.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "[limits]\nmax_pdf_renders = 1\n").unwrap();
    let _collector = Killed(
        Command::new(BIN)
            .args([
                "collector",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .env("EMPREINTE_CHROMIUM", &fake)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    empreinte_testkit::wait::wait_for(
        "the collector to start",
        empreinte_testkit::wait::PATIENCE,
        || ureq::get(&format!("{base}/healthz")).call().is_ok(),
    );
    // Last month, in the organisation's time zone (Europe/Paris by default).
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap());
    let last = now.date().first_of_month().yesterday().unwrap();
    let month = format!("{:04}-{:02}", last.year(), last.month());
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{base}/reports/{month}.pdf");
            let reader = reader.clone();
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .new_agent();
                let mut resp = agent
                    .get(&url)
                    .header("Authorization", &format!("Bearer {reader}"))
                    .call()
                    .unwrap();
                let status = resp.status().as_u16();
                let body = resp.body_mut().read_to_vec().unwrap();
                (status, body)
            })
        })
        .collect();
    for r in requests {
        let (status, body) = r.join().unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(body.starts_with(b"%PDF-"));
    }
    let seen: Vec<u32> = std::fs::read_to_string(&counts)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 8, "every request printed once: {seen:?}");
    assert_eq!(
        seen.iter().max(),
        Some(&1),
        "Chromium processes at once: {seen:?}"
    );
}
