//! Inference servers running on the host: processes whose command line is a known
//! server, with the TCP ports they listen on, read from procfs under the configured
//! root (`/proc/PID/cmdline`, `/proc/PID/stat` for the start time, `/proc/net/tcp` and
//! `tcp6` for listening sockets and their inodes, `/proc/PID/fd/*` links
//! `socket:[INODE]` for who owns them).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use empreinte_shared::wire::InferenceServerKind;

use crate::attribution::procs::parse_pid_stat;

/// A server process found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// Start time since boot, in clock ticks (with the PID, the process's identity).
    pub start_ticks: u64,
    pub kind: InferenceServerKind,
    /// The addresses it listens on, as they can be reached from the host.
    pub listening: Vec<SocketAddr>,
    pub cmdline: String,
}

/// The server kind a command line (NUL-separated arguments) runs, if any.
pub fn server_kind(args: &[&str]) -> Option<InferenceServerKind> {
    let base = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
    let program = args.first().map(|a| base(a)).unwrap_or_default();
    // An interpreter runs a script: `python3 /usr/local/bin/vllm serve …`.
    let script = args.get(1).map(|a| base(a)).unwrap_or_default();
    let is = |name: &str| program == name || (is_interpreter(&program) && script == name);
    if (is("vllm") && args.contains(&"serve"))
        || args.iter().any(|a| a.starts_with("vllm.entrypoints"))
    {
        return Some(InferenceServerKind::Vllm);
    }
    if args.iter().any(|a| a.starts_with("sglang.launch_server")) {
        return Some(InferenceServerKind::Sglang);
    }
    // The launcher starts the router, which serves HTTP.
    if is("text-generation-launcher") || is("text-generation-router") {
        return Some(InferenceServerKind::Tgi);
    }
    if is("tritonserver") {
        return Some(InferenceServerKind::Triton);
    }
    if is("llama-server") {
        return Some(InferenceServerKind::Llamacpp);
    }
    if is("litellm") {
        return Some(InferenceServerKind::Litellm);
    }
    None
}

fn is_interpreter(program: &str) -> bool {
    program.starts_with("python") || program == "uv" || program == "pipx"
}

/// Listening TCP sockets by inode, from `net/tcp` and `net/tcp6` under `root`.
pub fn listening_sockets(root: &Path) -> HashMap<u64, SocketAddr> {
    let mut out = HashMap::new();
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st queues timer retransmits uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let (Some(addr), Ok(inode)) = (parse_hex_addr(f[1], v6), f[9].parse::<u64>()) else {
                continue;
            };
            if inode != 0 {
                out.insert(inode, addr);
            }
        }
    }
    out
}

/// `0100007F:1F40` (IPv4, little-endian words as the kernel prints them) or its
/// 32-digit IPv6 form, as an address to connect to: a wildcard becomes loopback.
fn parse_hex_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (w, chunk) in bytes.chunks_mut(4).enumerate() {
            let word = u32::from_str_radix(ip.get(w * 8..w * 8 + 8)?, 16).ok()?;
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let v6 = Ipv6Addr::from(bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            None => IpAddr::V6(v6),
        }
    } else {
        let word = u32::from_str_radix(ip, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(word.to_le_bytes()))
    };
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other,
    };
    Some(SocketAddr::new(ip, port))
}

/// The listening addresses among `pid`'s open files.
pub fn ports_of(root: &Path, pid: u32, sockets: &HashMap<u64, SocketAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(root.join(pid.to_string()).join("fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        if let Some(addr) = inode.and_then(|i| sockets.get(&i)) {
            if !out.contains(addr) {
                out.push(*addr);
            }
        }
    }
    out.sort();
    out
}

/// A process's start time in ticks and its command line (arguments split at NUL).
pub fn process(root: &Path, pid: u32) -> Option<(u64, Vec<String>)> {
    let dir = root.join(pid.to_string());
    let stat = std::fs::read(dir.join("stat")).ok()?;
    let start = parse_pid_stat(pid, &stat)?.start_ticks;
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let args = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some((start, args))
}

/// Whether the process `pid` that started at `start_ticks` still runs: its directory is
/// there and its start time (when it can be read this once) is the same.
pub fn alive(root: &Path, pid: u32, start_ticks: u64) -> bool {
    root.join(pid.to_string()).exists() && process(root, pid).is_none_or(|(s, _)| s == start_ticks)
}

/// Every known server process under `root`, with its listening addresses (empty while
/// it loads its model and listens on nothing yet).
pub fn scan(root: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(root) else {
        return out;
    };
    let mut sockets: Option<HashMap<u64, SocketAddr>> = None;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((start_ticks, args)) = process(root, pid) else {
            continue;
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(kind) = server_kind(&refs) else {
            continue;
        };
        let sockets = sockets.get_or_insert_with(|| listening_sockets(root));
        out.push(Found {
            pid,
            start_ticks,
            kind,
            listening: ports_of(root, pid, sockets),
            cmdline: args.join(" "),
        });
    }
    out.sort_by_key(|f| f.pid);
    out
}

/// The process listening on `port` (any address), with its start time: who serves a
/// configured URL on this host.
pub fn owner_of_port(root: &Path, port: u16) -> Option<(u32, u64)> {
    let sockets: HashMap<u64, SocketAddr> = listening_sockets(root)
        .into_iter()
        .filter(|(_, a)| a.port() == port)
        .collect();
    if sockets.is_empty() {
        return None;
    }
    let dir = std::fs::read_dir(root).ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !ports_of(root, pid, &sockets).is_empty() {
            let (start, _) = process(root, pid)?;
            return Some((pid, start));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_command_lines_are_recognised() {
        use InferenceServerKind::*;
        for (cmd, kind) in [
            (
                "/usr/bin/vllm serve mistralai/Mistral-7B --port 8000",
                Some(Vllm),
            ),
            ("python3 /usr/local/bin/vllm serve m", Some(Vllm)),
            (
                "python3 -m vllm.entrypoints.openai.api_server --model m",
                Some(Vllm),
            ),
            (
                "python -m sglang.launch_server --model-path m",
                Some(Sglang),
            ),
            ("text-generation-launcher --model-id m", Some(Tgi)),
            ("/usr/bin/text-generation-router --port 3000", Some(Tgi)),
            (
                "/opt/tritonserver/bin/tritonserver --model-repository /m",
                Some(Triton),
            ),
            ("./llama-server -m model.gguf --metrics", Some(Llamacpp)),
            (
                "/usr/bin/python3 /usr/local/bin/litellm --config c.yaml",
                Some(Litellm),
            ),
            ("vim vllm serve notes", None),
            ("python3 train.py --model vllm", None),
            ("bash -c tritonserver", None),
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            assert_eq!(server_kind(&args), kind, "{cmd}");
        }
    }

    #[test]
    fn kernel_addresses_are_read_with_wildcards_as_loopback() {
        assert_eq!(
            parse_hex_addr("0100007F:1F40", false),
            Some("127.0.0.1:8000".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_hex_addr("00000000:0BB8", false),
            Some("127.0.0.1:3000".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_hex_addr("0A00000A:1F90", false),
            Some("10.0.0.10:8080".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_hex_addr("00000000000000000000000000000000:1F40", true),
            Some("[::1]:8000".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_hex_addr("0000000000000000FFFF00000100007F:1F40", true),
            Some("127.0.0.1:8000".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(parse_hex_addr("zz:1", false), None);
    }
}
