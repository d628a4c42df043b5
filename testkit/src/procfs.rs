//! A fake procfs tree: processes with a CPU time, an environment, a cgroup and a command
//! line, and the host's `/proc/stat`, in a temp dir. For benchmarks and for tests that
//! need exact control of CPU time (tests with real processes use the real `/proc`).

use std::fs;
use std::path::Path;

use tempfile::TempDir;

pub struct FakeProcfs {
    dir: TempDir,
}

/// A process to create.
pub struct FakeProcess<'a> {
    pub pid: u32,
    pub start_ticks: u64,
    pub cpu_ticks: u64,
    pub cmdline: &'a str,
    /// `KEY=VALUE` pairs.
    pub environ: &'a [(&'a str, &'a str)],
    /// Content of `/proc/PID/cgroup`.
    pub cgroup: &'a str,
}

impl FakeProcfs {
    pub fn new() -> FakeProcfs {
        let f = FakeProcfs {
            dir: tempfile::tempdir().unwrap(),
        };
        f.set_host_stat(0, 0);
        f
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Sets `/proc/stat`'s aggregate line: `busy` user ticks and `idle` idle ticks.
    pub fn set_host_stat(&self, busy: u64, idle: u64) {
        write_atomic(
            &self.dir.path().join("stat"),
            &format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        );
    }

    pub fn add(&self, p: &FakeProcess) {
        let d = self.dir.path().join(p.pid.to_string());
        fs::create_dir_all(&d).unwrap();
        let mut env = Vec::new();
        for (k, v) in p.environ {
            env.extend_from_slice(format!("{k}={v}").as_bytes());
            env.push(0);
        }
        fs::write(d.join("environ"), env).unwrap();
        fs::write(d.join("cgroup"), p.cgroup).unwrap();
        let argv: Vec<u8> = p
            .cmdline
            .split(' ')
            .flat_map(|a| a.bytes().chain([0u8]))
            .collect();
        fs::write(d.join("cmdline"), argv).unwrap();
        let comm = p.cmdline.split(' ').next().unwrap_or("x");
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        self.set_ticks(p.pid, p.start_ticks, p.cpu_ticks);
    }

    /// Sets a process's CPU time (all of it as user time).
    pub fn set_ticks(&self, pid: u32, start_ticks: u64, cpu_ticks: u64) {
        // Fixed-width numbers: every write of a process's `stat` has the same length.
        let stat = format!(
            "{pid} (proc {pid}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {cpu_ticks:020} 0 0 0 20 0 1 0 {start_ticks:020} 1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
        );
        // In place, not by rename: the agent keeps `stat` files open between cycles and
        // reads them again, as procfs allows; a renamed file would be a new inode. And
        // without truncating first: procfs gives a reader the whole content, never an
        // empty file (a reader between a truncation and the write would see the process
        // gone for a cycle, and that cycle's CPU energy would go to no process). The
        // length never changes, so one write over the old content is the whole update.
        use std::io::Write;
        let path = self.dir.path().join(pid.to_string()).join("stat");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        f.write_all(stat.as_bytes()).unwrap();
    }

    /// `pid` listens on TCP `127.0.0.1:port`: a `LISTEN` line in `net/tcp` and an
    /// `fd/N` link `socket:[INODE]`, as the kernel shows them.
    pub fn listen(&self, pid: u32, port: u16) {
        let inode = 7_000_000 + u64::from(pid) * 100_000 + u64::from(port);
        let net = self.dir.path().join("net");
        fs::create_dir_all(&net).unwrap();
        let tcp = net.join("tcp");
        let mut text = fs::read_to_string(&tcp).unwrap_or_else(|_| {
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n".into()
        });
        let n = text.lines().count() - 1;
        text.push_str(&format!(
            "{n:>4}: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        ));
        write_atomic(&tcp, &text);
        let fd = self.dir.path().join(pid.to_string()).join("fd");
        fs::create_dir_all(&fd).unwrap();
        let slot = fs::read_dir(&fd).unwrap().count() + 3;
        std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd.join(slot.to_string())).unwrap();
    }

    /// The process exits. Its `stat` is emptied first: a file the agent kept open then
    /// reads nothing, as procfs answers `ESRCH` for a process that is gone.
    pub fn remove(&self, pid: u32) {
        let _ = fs::write(self.dir.path().join(pid.to_string()).join("stat"), "");
        fs::remove_dir_all(self.dir.path().join(pid.to_string())).unwrap();
    }
}

impl Default for FakeProcfs {
    fn default() -> Self {
        Self::new()
    }
}

fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content).unwrap();
    fs::rename(tmp, path).unwrap();
}
