//! The process seam: what the attribution needs to know about running processes.
//!
//! [`ProcFs`] reads a procfs tree from a configurable root (the host's `/proc`, or a
//! directory a test builds). Each cycle needs only [`ProcessSource::scan`] (one small read
//! of `/proc/PID/stat` per process); the details that resolve a process to a project
//! (`environ`, `cgroup`, `cmdline`, owner) are read once per new process.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

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
    /// False when `environ` could not be read for lack of permission: another user's
    /// process, and the agent has neither the same uid nor CAP_SYS_PTRACE.
    pub environ_readable: bool,
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
    /// The root directory, opened once: per-process files are opened relative to it
    /// (`openat`), so each open walks two path components instead of the whole path.
    root_fd: Option<rustix::fd::OwnedFd>,
    path: PathBuf,
    name: String,
    buf: Vec<u8>,
    pids: Vec<u32>,
    /// `stat` files kept open between cycles, read again with `pread` (procfs regenerates
    /// the content at offset 0): one system call per process and cycle instead of three.
    /// The `u64` is the scan that last used the file: files of gone processes are closed.
    open_stats: HashMap<u32, (rustix::fd::OwnedFd, u64)>,
    /// How many `stat` files may stay open (from the open-files limit).
    open_budget: usize,
    scans: u64,
}

/// Raises the soft open-files limit to the hard one and returns how many `stat` files
/// the scanner may keep open: the soft limit less a margin for everything else.
fn stat_file_budget() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (limit.current, limit.maximum) {
        if cur < max {
            limit.current = Some(max.min(1 << 20));
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    usize::try_from(soft.saturating_sub(512) / 2)
        .unwrap_or(0)
        .min(1 << 16)
}

impl ProcFs {
    pub fn new(root: &Path) -> ProcFs {
        ProcFs {
            root: root.to_path_buf(),
            root_fd: open_dir(root),
            path: PathBuf::with_capacity(64),
            name: String::with_capacity(24),
            pids: Vec::with_capacity(1024),
            buf: Vec::with_capacity(1024),
            open_stats: HashMap::new(),
            open_budget: stat_file_budget(),
            scans: 0,
        }
    }

    /// Reads `pid`'s `stat` into `buf`, through the kept file when there is one. A kept
    /// file that fails (the process is gone: `ESRCH`; or the PID was reused) is closed
    /// and the file opened again.
    fn read_stat(&mut self, pid: u32) -> io::Result<()> {
        self.buf.clear();
        if let Some((fd, used)) = self.open_stats.get_mut(&pid) {
            *used = self.scans;
            if pread_fd(fd, &mut self.buf).is_ok() && !self.buf.is_empty() {
                return Ok(());
            }
            self.open_stats.remove(&pid);
            self.buf.clear();
        }
        let fd = self.open(pid, "stat")?;
        pread_fd(&fd, &mut self.buf)?;
        if self.open_stats.len() < self.open_budget {
            self.open_stats.insert(pid, (fd, self.scans));
        }
        Ok(())
    }

    fn read_into_buf(&mut self, pid: u32, file: &str) -> io::Result<()> {
        self.buf.clear();
        let fd = self.open(pid, file)?;
        pread_fd(&fd, &mut self.buf)
    }

    /// Opens `PID/file`, relative to the root directory when it could be opened, else by
    /// its whole path.
    fn open(&mut self, pid: u32, file: &str) -> io::Result<rustix::fd::OwnedFd> {
        use std::fmt::Write as _;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        if self.root_fd.is_none() {
            self.root_fd = open_dir(&self.root);
        }
        match &self.root_fd {
            Some(dir) => {
                self.name.clear();
                let _ = write!(self.name, "{pid}/{file}");
                Ok(rustix::fs::openat(
                    dir,
                    self.name.as_str(),
                    flags,
                    Mode::empty(),
                )?)
            }
            None => {
                self.set_path(pid, Some(file));
                Ok(rustix::fs::open(&self.path, flags, Mode::empty())?)
            }
        }
    }

    fn set_path(&mut self, pid: u32, file: Option<&str>) {
        use std::fmt::Write as _;
        self.name.clear();
        let _ = write!(self.name, "{pid}");
        self.path.clear();
        self.path.push(&self.root);
        self.path.push(&self.name);
        if let Some(f) = file {
            self.path.push(f);
        }
    }
}

/// A directory name that is a PID (digits only).
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

fn open_dir(root: &Path) -> Option<rustix::fd::OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// Reads an open file from offset 0 into `buf` (procfs regenerates it).
fn pread_fd(fd: &rustix::fd::OwnedFd, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let mut offset = 0u64;
    loop {
        let n = rustix::io::pread(fd, &mut chunk, offset)?;
        buf.extend_from_slice(&chunk[..n]);
        if n < chunk.len() {
            return Ok(());
        }
        offset += n as u64;
    }
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
        self.pids.clear();
        if self.root_fd.is_none() {
            self.root_fd = open_dir(&self.root);
        }
        match &self.root_fd {
            Some(fd) => {
                for entry in rustix::fs::Dir::read_from(fd)? {
                    let Ok(entry) = entry else { continue };
                    if let Some(pid) = parse_pid(entry.file_name().to_bytes()) {
                        self.pids.push(pid);
                    }
                }
            }
            None => {
                for entry in std::fs::read_dir(&self.root)? {
                    let Ok(entry) = entry else { continue };
                    if let Some(pid) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<u32>().ok())
                    {
                        self.pids.push(pid);
                    }
                }
            }
        }
        self.scans += 1;
        let pids = std::mem::take(&mut self.pids);
        for &pid in &pids {
            // A process may exit between the listing and the read: skip it.
            if self.read_stat(pid).is_ok() {
                if let Some(stat) = parse_pid_stat(pid, &self.buf) {
                    out.push(stat);
                }
            }
        }
        self.pids = pids;
        let scans = self.scans;
        self.open_stats.retain(|_, (_, used)| *used == scans);
        Ok(())
    }

    fn host_cpu_times(&mut self) -> io::Result<CpuTimes> {
        let text = std::fs::read_to_string(self.root.join("stat"))?;
        CpuTimes::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn details(&mut self, pid: u32) -> Option<ProcDetails> {
        self.set_path(pid, None);
        let uid = std::fs::metadata(&self.path).ok().map(|m| m.uid());
        let cgroup = match self.read_into_buf(pid, "cgroup") {
            Ok(()) => String::from_utf8_lossy(&self.buf).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) => String::new(),
        };
        let (environ, environ_readable) = match self.read_into_buf(pid, "environ") {
            Ok(()) => (std::mem::take(&mut self.buf), true),
            // Another user's process without CAP_SYS_PTRACE: no environment.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => (Vec::new(), false),
            Err(_) => (Vec::new(), true),
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
            environ_readable,
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
    fn a_kept_stat_file_shows_fresh_cpu_time_on_the_real_procfs() {
        let mut p = ProcFs::new(Path::new("/proc"));
        let me = std::process::id();
        let ticks = |p: &mut ProcFs| {
            let mut out = Vec::new();
            p.scan(&mut out).unwrap();
            out.into_iter().find(|s| s.pid == me).unwrap().cpu_ticks
        };
        let before = ticks(&mut p);
        assert!(p.open_stats.contains_key(&me), "the file is kept open");
        // Spin until the kernel has charged at least 3 more ticks, as a freshly opened
        // /proc/self/stat says: CPU time, not wall time, so a loaded machine only makes
        // this take longer. Then the kept-open file must show them too.
        let fresh = || {
            let text = std::fs::read(format!("/proc/{me}/stat")).unwrap();
            parse_pid_stat(me, &text).unwrap().cpu_ticks
        };
        let mut x = 0u64;
        let spin = crate::clock::Stopwatch::start();
        while fresh() < before + 3 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            assert!(
                spin.elapsed() < std::time::Duration::from_secs(120),
                "the kernel charged no CPU time to a spinning thread in 2 minutes"
            );
        }
        std::hint::black_box(x);
        assert!(
            ticks(&mut p) >= before + 3,
            "pread at offset 0 regenerates /proc/PID/stat"
        );
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
