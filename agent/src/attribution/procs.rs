//! The process seam: what the attribution needs to know about running processes.
//!
//! [`ProcFs`] reads a procfs tree from a configurable root (the host's `/proc`, or a
//! directory a test builds). Each cycle needs only [`ProcessSource::scan`] (one small read
//! of `/proc/PID/stat` per process); the details that resolve a process to a project
//! (`environ`, `cgroup`, `cmdline`, owner) are read once per new process.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sources::estimate::CpuTimes;

/// One process's CPU use, as of the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// Start time since boot, in clock ticks: a PID whose start time changed was reused.
    pub start_ticks: u64,
    /// User + system CPU time of all the process's threads, in clock ticks.
    pub cpu_ticks: u64,
}

/// What resolves a process to a project; read once per new process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcDetails {
    pub uid: Option<u32>,
    /// The command line, arguments separated by spaces (the `comm` name for kernel threads).
    pub cmdline: String,
    /// Raw `environ`: `KEY=VALUE` entries separated by NUL bytes (empty when unreadable).
    pub environ: Vec<u8>,
    /// Raw content of `/proc/PID/cgroup`.
    pub cgroup: String,
}

/// Where process information comes from.
pub trait ProcessSource: Send {
    /// Appends every live process (thread-group leaders) to `out`.
    fn scan(&mut self, out: &mut Vec<ProcStat>) -> io::Result<()>;
    /// The host's aggregate CPU times (`/proc/stat`), the time base of the CPU split.
    fn host_cpu_times(&mut self) -> io::Result<CpuTimes>;
    /// Details of one process; `None` if it has gone.
    fn details(&mut self, pid: u32) -> Option<ProcDetails>;
}

/// Reads a procfs tree.
pub struct ProcFs {
    root: PathBuf,
    path: PathBuf,
    buf: Vec<u8>,
}

impl ProcFs {
    pub fn new(root: &Path) -> ProcFs {
        ProcFs {
            root: root.to_path_buf(),
            path: PathBuf::with_capacity(64),
            buf: Vec::with_capacity(1024),
        }
    }

    fn read_into_buf(&mut self, pid: u32, file: &str) -> io::Result<()> {
        self.path.clear();
        self.path.push(&self.root);
        self.path.push(itoa(pid).as_str());
        self.path.push(file);
        self.buf.clear();
        File::open(&self.path)?.read_to_end(&mut self.buf)?;
        Ok(())
    }
}

fn itoa(n: u32) -> String {
    n.to_string()
}

/// Parses `/proc/PID/stat`: the command name is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_pid_stat(pid: u32, content: &[u8]) -> Option<ProcStat> {
    let close = content.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(content.get(close + 1..)?).ok()?;
    // Fields after the name start at field 3 (state): utime is 14, stime 15, starttime 22.
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let start_ticks: u64 = fields.nth(6)?.parse().ok()?;
    Some(ProcStat {
        pid,
        start_ticks,
        cpu_ticks: utime.saturating_add(stime),
    })
}

impl ProcessSource for ProcFs {
    fn scan(&mut self, out: &mut Vec<ProcStat>) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // A process may exit between the listing and the read: skip it.
            if self.read_into_buf(pid, "stat").is_ok() {
                if let Some(stat) = parse_pid_stat(pid, &self.buf) {
                    out.push(stat);
                }
            }
        }
        Ok(())
    }

    fn host_cpu_times(&mut self) -> io::Result<CpuTimes> {
        let text = std::fs::read_to_string(self.root.join("stat"))?;
        CpuTimes::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn details(&mut self, pid: u32) -> Option<ProcDetails> {
        self.path.clear();
        self.path.push(&self.root);
        self.path.push(itoa(pid).as_str());
        let uid = std::fs::metadata(&self.path).ok().map(|m| m.uid());
        let cgroup = match self.read_into_buf(pid, "cgroup") {
            Ok(()) => String::from_utf8_lossy(&self.buf).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) => String::new(),
        };
        let environ = match self.read_into_buf(pid, "environ") {
            Ok(()) => std::mem::take(&mut self.buf),
            Err(_) => Vec::new(), // another user's process without CAP_SYS_PTRACE: no environment
        };
        let mut cmdline = match self.read_into_buf(pid, "cmdline") {
            Ok(()) => self
                .buf
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" "),
            Err(_) => String::new(),
        };
        if cmdline.is_empty() && self.read_into_buf(pid, "comm").is_ok() {
            cmdline = format!("[{}]", String::from_utf8_lossy(&self.buf).trim());
        }
        Some(ProcDetails {
            uid,
            cmdline,
            environ,
            cgroup,
        })
    }
}

/// The value of `name` in a raw NUL-separated environment, if set and not empty.
pub fn environ_value<'a>(environ: &'a [u8], name: &str) -> Option<&'a str> {
    environ.split(|&b| b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(rest).ok().filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = b"4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 3 0 987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_pid_stat(4242, line),
            Some(ProcStat {
                pid: 4242,
                start_ticks: 987654,
                cpu_ticks: 1801
            })
        );
        assert_eq!(parse_pid_stat(1, b"1 (init) S 1 2"), None);
        assert_eq!(parse_pid_stat(1, b"garbage"), None);
    }

    #[test]
    fn environment_values_are_found_exactly() {
        let env = b"PATH=/bin\0EMPREINTE_PROJECT_X=no\0EMPREINTE_PROJECT=chatbot\0EMPTY=\0";
        assert_eq!(environ_value(env, "EMPREINTE_PROJECT"), Some("chatbot"));
        assert_eq!(environ_value(env, "EMPTY"), None);
        assert_eq!(environ_value(env, "HOME"), None);
    }

    #[test]
    fn the_real_procfs_shows_this_process() {
        let mut p = ProcFs::new(Path::new("/proc"));
        let mut out = Vec::new();
        p.scan(&mut out).unwrap();
        let me = std::process::id();
        assert!(
            out.iter().any(|s| s.pid == me),
            "this test process is listed"
        );
        let d = p.details(me).unwrap();
        assert!(!d.cmdline.is_empty());
        assert!(!d.cgroup.is_empty());
        assert!(p.host_cpu_times().unwrap().total > 0);
        assert!(p.details(u32::MAX).is_none());
    }
}
