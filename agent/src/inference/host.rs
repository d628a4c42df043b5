//! Servers on this host: processes whose command line is a known server, probed once on
//! their listening ports ([`discover`]), and the local process serving each configured
//! loopback URL ([`locate_configured`]), from procfs under the configured root
//! ([`super::discovery`]).

use std::collections::HashSet;
use std::sync::Mutex;

use super::series::Tracker;
use super::{LOCATE_EVERY, Origin, Server, ServerInfo, Servers, Settings, Unread, discovery, read};

/// Finds new server processes and probes each once; marks gone the discovered servers
/// whose process ended.
pub(super) fn discover(shared: &Mutex<Servers>, settings: &Settings, agent: &ureq::Agent) {
    let found = discovery::scan(&settings.procfs_root);
    let to_probe: Vec<discovery::Found> = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        let root = &settings.procfs_root;
        for srv in &mut s.servers {
            if let (Origin::Discovered, Some(pid), Some(start)) =
                (srv.info.origin, srv.info.pid, srv.info.start_ticks)
            {
                srv.gone |= !discovery::alive(root, pid, start);
            }
        }
        s.probed
            .retain(|&(pid, start)| discovery::alive(root, pid, start));
        // Pods' entries (pid 0) are the pod round's.
        s.unread
            .retain(|u| u.pid == 0 || found.iter().any(|f| f.pid == u.pid));
        let known: HashSet<u32> = s.servers.iter().filter_map(|srv| srv.info.pid).collect();
        found
            .into_iter()
            .filter(|f| {
                !f.listening.is_empty()
                    && !s.probed.contains(&(f.pid, f.start_ticks))
                    && !known.contains(&f.pid)
            })
            .collect()
    };
    for f in to_probe {
        let mut last_error = String::from("it listens on no port");
        let mut hit = None;
        for addr in &f.listening {
            let url = format!("http://{addr}/metrics");
            match read(agent, f.kind, &url) {
                Ok(_) => {
                    hit = Some(url);
                    break;
                }
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.probed.insert((f.pid, f.start_ticks));
        let configured_here = hit.as_ref().is_some_and(|url| {
            s.servers
                .iter()
                .any(|srv| &srv.info.url == url || same_port(&srv.info.url, url))
        });
        match hit {
            Some(_) if configured_here => {}
            Some(url) if s.servers.len() < settings.scrape.max_servers => {
                tracing::info!(pid = f.pid, kind = %f.kind, server = %url, "inference server found on the host");
                let id = s.next_id;
                s.next_id += 1;
                s.servers.push(Server {
                    id,
                    info: ServerInfo {
                        kind: f.kind,
                        url,
                        origin: Origin::Discovered,
                        project: None,
                        model: None,
                        pod: None,
                        pid: Some(f.pid),
                        start_ticks: Some(f.start_ticks),
                        models: Vec::new(),
                        up: false,
                        last_error: None,
                        scrapes_total: 0,
                        scrape_errors_total: 0,
                    },
                    tracker: Tracker::default(),
                    asked_info: false,
                    gone: false,
                });
            }
            Some(url) => s.unread.push(Unread {
                pid: f.pid,
                kind: f.kind,
                cmdline: f.cmdline,
                reason: format!("{url} answers, but inference_scrape.max_servers = {} are read already", settings.scrape.max_servers),
            }),
            None => s.unread.push(Unread {
                pid: f.pid,
                kind: f.kind,
                cmdline: f.cmdline,
                reason: format!("no metrics on its ports ({last_error}); is its metrics endpoint on (llama-server --metrics, SGLang --enable-metrics)?"),
            }),
        }
    }
}

/// A loopback URL on the same port as `other` (a configured server the discovery
/// finds again).
fn same_port(a: &str, b: &str) -> bool {
    let port = |u: &str| {
        url::Url::parse(u)
            .ok()
            .and_then(|u| u.port_or_known_default())
    };
    let local = |u: &str| {
        url::Url::parse(u).ok().is_some_and(|u| {
            matches!(
                u.host_str(),
                Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
            )
        })
    };
    local(a) && local(b) && port(a).is_some() && port(a) == port(b)
}

/// The process serving each configured loopback URL, found (again) when unknown or
/// gone.
pub(super) fn locate_configured(shared: &Mutex<Servers>, settings: &Settings) {
    // (server id, port, the process known to serve it)
    type Wanted = (u64, u16, Option<(u32, u64)>);
    let (wanted, round): (Vec<Wanted>, u64) = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.rounds += 1;
        let wanted = s
            .servers
            .iter()
            .filter(|srv| srv.info.origin == Origin::Configured)
            .filter_map(|srv| {
                let u = url::Url::parse(&srv.info.url).ok()?;
                let local = matches!(
                    u.host_str(),
                    Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
                );
                let known = srv.info.pid.zip(srv.info.start_ticks);
                local.then_some((srv.id, u.port_or_known_default()?, known))
            })
            .collect();
        (wanted, s.rounds)
    };
    for (id, port, known) in wanted {
        match known {
            Some((pid, start)) if discovery::alive(&settings.procfs_root, pid, start) => continue,
            Some(_) => {}
            // Looking through every process's sockets costs: a URL no local process
            // serves is looked for again every LOCATE_EVERY rounds only.
            None if round % LOCATE_EVERY != 1 => continue,
            None => {}
        }
        let owner = discovery::owner_of_port(&settings.procfs_root, port);
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(srv) = s.servers.iter_mut().find(|srv| srv.id == id) {
            srv.info.pid = owner.map(|o| o.0);
            srv.info.start_ticks = owner.map(|o| o.1);
        }
    }
}
