//! CPU time and memory of processes, read from `/proc`, and a description of the machine.
//!
//! CPU time comes from two clocks, read at the same instants:
//!
//! - `schedstat`: the first field of `/proc/PID/task/TID/schedstat` (nanoseconds on the CPU,
//!   `proc(5)`), summed over the live threads. Nanosecond resolution, but a thread that exits
//!   during a phase takes its time with it (only its time before the phase start was seen).
//! - `ticks`: `utime + stime` of `/proc/PID/stat` (all threads, including exited ones), in clock
//!   ticks of `getconf CLK_TCK` (usually 100 per second, so 10 ms resolution).
//!
//! A phase's CPU time is the `schedstat` delta unless the `ticks` delta exceeds it by more than
//! the ticks' own rounding (two ticks): then threads exited during the phase (or schedstat is
//! not kept) and the `ticks` delta is used; see [`choose_cpu`]. Which clock each figure came
//! from is recorded ([`CpuClock`]). Peak RSS is `VmHWM` of
//! `/proc/PID/status`, reset when a measured phase starts (`/proc/PID/clear_refs`), so a row's
//! peak is the peak of its own phase where the kernel allows the reset.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/PID/stat` times, from `getconf CLK_TCK`; 100 when that
/// command is unavailable (the value on every common Linux configuration).
#[must_use]
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// A process whose `/proc` entries are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcTarget {
    dir: PathBuf,
    /// Also count the live descendants (a Python server that may fork workers).
    tree: Option<u32>,
}

impl ProcTarget {
    /// The calling process (`/proc/self`).
    #[must_use]
    pub fn this() -> Self {
        Self {
            dir: PathBuf::from("/proc/self"),
            tree: None,
        }
    }

    /// The process with id `pid`.
    #[must_use]
    pub fn pid(pid: u32) -> Self {
        Self {
            dir: PathBuf::from(format!("/proc/{pid}")),
            tree: None,
        }
    }

    /// The process with id `pid` and its live descendants: CPU time is summed over all of
    /// them, peak RSS too (each child's own peak; children that exited are not counted).
    #[must_use]
    pub fn tree(pid: u32) -> Self {
        Self {
            dir: PathBuf::from(format!("/proc/{pid}")),
            tree: Some(pid),
        }
    }

    /// The `/proc` directories of the descendants of `root` (scanning every process's ppid).
    fn descendants(root: u32) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let parents: Vec<(u32, u32)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                Some((pid, parse_ppid(&stat)?))
            })
            .collect();
        let mut found = vec![root];
        let mut i = 0;
        while i < found.len() {
            let p = found[i];
            found.extend(parents.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
            i += 1;
        }
        found
            .into_iter()
            .skip(1)
            .map(|pid| PathBuf::from(format!("/proc/{pid}")))
            .collect()
    }

    /// The directories read: this process's, plus its descendants' for a tree.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.clone()];
        if let Some(root) = self.tree {
            dirs.extend(Self::descendants(root));
        }
        dirs
    }

    /// User plus system CPU time consumed so far, in clock ticks.
    ///
    /// # Errors
    ///
    /// The I/O error when `/proc/PID/stat` cannot be read (the process is gone), or
    /// `InvalidData` when it cannot be parsed.
    pub fn cpu_ticks(&self) -> io::Result<u64> {
        self.sum("stat", "unexpected /proc/PID/stat format", parse_cpu_ticks)
    }

    /// Nanoseconds on the CPU of each live thread, by thread id: the first field of
    /// `/proc/PID/task/TID/schedstat` of the process (and of its descendants for a tree).
    ///
    /// # Errors
    ///
    /// The I/O error when the process's `task` directory cannot be read (the process is gone),
    /// or `InvalidData` when a `schedstat` file does not parse or every thread reads zero (a
    /// kernel that keeps no schedstats prints `0 0 0`). Threads (and descendants) that exit
    /// between the directory scan and the read are skipped.
    pub fn thread_cpu_ns(&self) -> io::Result<BTreeMap<u32, u64>> {
        let mut out = BTreeMap::new();
        for (i, dir) in self.dirs().into_iter().enumerate() {
            let tasks = match std::fs::read_dir(dir.join("task")) {
                Ok(t) => t,
                Err(_) if i > 0 => continue,
                Err(e) => return Err(e),
            };
            for entry in tasks.filter_map(Result::ok) {
                let Some(tid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                    continue;
                };
                let ns = parse_schedstat_ns(&text).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected /proc/PID/task/TID/schedstat format",
                    )
                })?;
                out.insert(tid, ns);
            }
        }
        if out.values().all(|&ns| ns == 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "schedstat reads zero for every thread (no schedstats on this kernel)",
            ));
        }
        Ok(out)
    }

    /// Peak resident set size (`VmHWM`), in KiB.
    ///
    /// # Errors
    ///
    /// The I/O error when `/proc/PID/status` cannot be read, or `InvalidData` without `VmHWM`.
    pub fn peak_rss_kib(&self) -> io::Result<u64> {
        self.sum("status", "no VmHWM: in /proc/PID/status", |s| {
            parse_status_kib(s, "VmHWM:")
        })
    }

    /// Current resident set size (`VmRSS`), in KiB.
    ///
    /// # Errors
    ///
    /// The I/O error when `/proc/PID/status` cannot be read, or `InvalidData` without `VmRSS`.
    pub fn rss_kib(&self) -> io::Result<u64> {
        self.sum("status", "no VmRSS: in /proc/PID/status", |s| {
            parse_status_kib(s, "VmRSS:")
        })
    }

    /// `parse` of `/proc/PID/FILE`, summed over the tree for a tree (`missing` names what
    /// `parse` did not find).
    fn sum(
        &self,
        file: &str,
        missing: &str,
        parse: impl Fn(&str) -> Option<u64>,
    ) -> io::Result<u64> {
        let mut total = 0;
        for (i, dir) in self.dirs().into_iter().enumerate() {
            let text = match std::fs::read_to_string(dir.join(file)) {
                Ok(s) => s,
                // A descendant may exit between the scan and the read.
                Err(_) if i > 0 => continue,
                Err(e) => return Err(e),
            };
            total += parse(&text)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, missing.to_owned()))?;
        }
        Ok(total)
    }

    /// Resets the peak RSS (`VmHWM`) of every process to its current RSS by writing `5` to
    /// `/proc/PID/clear_refs` (Linux 4.0+, `proc(5)`), so the next reading is the peak since
    /// now. Best effort: without the permission the peak stays the lifetime one.
    pub fn reset_peak_rss(&self) {
        for dir in self.dirs() {
            let _ = std::fs::write(dir.join("clear_refs"), "5");
        }
    }

    /// Number of threads (`Threads:` of `/proc/PID/status`) of the process itself.
    ///
    /// # Errors
    ///
    /// When `/proc/PID/status` cannot be read or has no `Threads:` line.
    pub fn threads(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(self.dir.join("status"))?;
        parse_status_kib(&status, "Threads:").ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no Threads in /proc/PID/status")
        })
    }
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is field 14, index 11 here.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Nanoseconds on the CPU: the first of the three fields of a `schedstat` line
/// (`proc(5)`: time on the CPU, time waiting on a run queue, timeslices run). `None` unless
/// the line has exactly three unsigned integers.
fn parse_schedstat_ns(line: &str) -> Option<u64> {
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (fields.len() == 3).then(|| fields[0])
}

/// CPU nanoseconds used between two per-thread readings ([`ProcTarget::thread_cpu_ns`]): each
/// thread's increase, a thread new in `after` counting from zero (as does a thread id reused
/// by a new thread, seen as a decrease). Threads gone from `after` count nothing.
#[must_use]
pub fn thread_ns_delta(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, &a)| match before.get(tid) {
            Some(&b) if b <= a => a - b,
            _ => a,
        })
        .sum()
}

/// The clock a CPU figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuClock {
    /// Per-thread nanoseconds of `/proc/PID/task/TID/schedstat`.
    Schedstat,
    /// `utime + stime` of `/proc/PID/stat` in clock ticks (schedstat unavailable, or threads
    /// exited during the phase).
    Ticks,
}

impl CpuClock {
    /// The name recorded in the report: `schedstat` or `ticks`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Schedstat => "schedstat",
            Self::Ticks => "ticks",
        }
    }
}

/// CPU time one process used in a phase, and the clock it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuUsed {
    /// User plus system time on the CPU.
    pub time: Duration,
    /// Where `time` came from.
    pub clock: CpuClock,
}

/// Picks a phase's CPU time from its two readings: `ticks` (the `/proc/PID/stat` delta, in
/// clock ticks of `ticks_per_second`) and `ns` (the per-thread schedstat delta, nanoseconds).
///
/// The schedstat delta is used when present, unless the tick delta exceeds it by more than
/// two ticks: `/proc/PID/stat` counts threads that exited during the phase and schedstat does
/// not, and each tick reading is the exact total rounded down to a tick, so a delta differs by
/// less than two ticks from the truth. Then the tick delta (the larger, complete one) is used.
/// `None` when neither reading is there.
#[must_use]
pub fn choose_cpu(ticks: Option<u64>, ns: Option<u64>, ticks_per_second: u64) -> Option<CpuUsed> {
    let tps = u128::from(ticks_per_second.max(1));
    let ticks_ns =
        ticks.map(|t| u64::try_from(u128::from(t) * 1_000_000_000 / tps).unwrap_or(u64::MAX));
    let tick_ns = u64::try_from(1_000_000_000 / tps).unwrap_or(u64::MAX);
    let from_ticks = |t_ns: u64| CpuUsed {
        time: Duration::from_nanos(t_ns),
        clock: CpuClock::Ticks,
    };
    match (ticks_ns, ns) {
        (Some(t), Some(n)) if t > n.saturating_add(2 * tick_ns) => Some(from_ticks(t)),
        (_, Some(n)) => Some(CpuUsed {
            time: Duration::from_nanos(n),
            clock: CpuClock::Schedstat,
        }),
        (Some(t), None) => Some(from_ticks(t)),
        (None, None) => None,
    }
}

/// The parent pid (field 4) of a `/proc/PID/stat` line.
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Named processes whose CPU time is sampled around each measured row.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    ticks_per_second: u64,
    targets: Vec<(String, ProcTarget)>,
}

/// CPU readings of each process of a [`CpuMeter`] at one instant: its clock ticks and its
/// threads' schedstat nanoseconds (`None` where unreadable).
#[derive(Debug, Clone)]
pub struct CpuSample {
    ticks: Vec<Option<u64>>,
    thread_ns: Vec<Option<BTreeMap<u32, u64>>>,
}

impl CpuMeter {
    /// A meter over `targets` (name, process).
    #[must_use]
    pub fn new(targets: Vec<(String, ProcTarget)>) -> Self {
        Self {
            ticks_per_second: clock_ticks_per_second(),
            targets,
        }
    }

    /// Clock ticks per second used for the conversion.
    #[must_use]
    pub fn ticks_per_second(&self) -> u64 {
        self.ticks_per_second
    }

    /// Starts a measured phase: resets every process's peak RSS (see
    /// [`ProcTarget::reset_peak_rss`]) and reads its CPU clocks.
    #[must_use]
    pub fn start(&self) -> CpuSample {
        for (_, t) in &self.targets {
            t.reset_peak_rss();
        }
        self.sample()
    }

    /// Reads every process's CPU clocks now (ticks and per-thread schedstat); a reading that
    /// fails is `None`.
    #[must_use]
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            ticks: self
                .targets
                .iter()
                .map(|(_, t)| t.cpu_ticks().ok())
                .collect(),
            thread_ns: self
                .targets
                .iter()
                .map(|(_, t)| t.thread_cpu_ns().ok())
                .collect(),
        }
    }

    /// CPU time each process used between two samples, by name, with the clock it came from
    /// (see [`choose_cpu`]). Processes that could not be read on either clock in both samples
    /// are left out.
    #[must_use]
    pub fn used(&self, before: &CpuSample, after: &CpuSample) -> BTreeMap<String, CpuUsed> {
        self.targets
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| {
                let ticks = match (before.ticks.get(i)?, after.ticks.get(i)?) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(*b)),
                    _ => None,
                };
                let ns = match (before.thread_ns.get(i)?, after.thread_ns.get(i)?) {
                    (Some(b), Some(a)) => Some(thread_ns_delta(b, a)),
                    _ => None,
                };
                Some((name.clone(), choose_cpu(ticks, ns, self.ticks_per_second)?))
            })
            .collect()
    }

    /// Peak RSS of every process that can be read, in KiB, by name.
    #[must_use]
    pub fn peak_rss_kib(&self) -> BTreeMap<String, u64> {
        self.targets
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), t.peak_rss_kib().ok()?)))
            .collect()
    }
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPUs this process may use (`nproc`).
    pub nproc: usize,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release, from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// Clock ticks per second of `/proc` CPU times.
    pub clock_ticks_per_second: u64,
}

impl MachineInfo {
    /// Reads the description of this machine; unknown parts are `"unknown"`.
    #[must_use]
    pub fn collect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        Self {
            nproc: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            cpu_model,
            kernel,
            clock_ticks_per_second: clock_ticks_per_second(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert_eq!(parse_ppid(stat), Some(1));
    }

    #[test]
    fn reads_own_process() {
        let me = ProcTarget::this();
        assert!(me.cpu_ticks().is_ok());
        assert!(me.peak_rss_kib().unwrap() > 0);
    }

    #[test]
    fn parses_schedstat() {
        assert_eq!(parse_schedstat_ns("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns("0 0 0\n"), Some(0));
        assert_eq!(parse_schedstat_ns(""), None);
        assert_eq!(parse_schedstat_ns("12 34\n"), None);
        assert_eq!(parse_schedstat_ns("12 x 3\n"), None);
        assert_eq!(parse_schedstat_ns("-1 2 3\n"), None);
    }

    #[test]
    fn thread_deltas_count_new_and_reused_threads() {
        let before: BTreeMap<u32, u64> = [(1, 100), (2, 50), (3, 70)].into();
        // 1 ran 10 ns; 2 exited; 3's id was reused by a thread that ran 5 ns; 4 is new.
        let after: BTreeMap<u32, u64> = [(1, 110), (3, 5), (4, 20)].into();
        assert_eq!(thread_ns_delta(&before, &after), 10 + 5 + 20);
    }

    #[test]
    fn chooses_schedstat_unless_ticks_say_threads_exited() {
        let ms = |n: u64| Duration::from_millis(n);
        // 3 ticks at 100 Hz = 30 ms; schedstat 25.3 ms: within rounding, schedstat wins.
        let c = choose_cpu(Some(3), Some(25_300_000), 100).unwrap();
        assert_eq!(c.clock, CpuClock::Schedstat);
        assert_eq!(c.time, Duration::from_nanos(25_300_000));
        // 0 ticks but schedstat saw 4 ms: the finer clock.
        assert_eq!(
            choose_cpu(Some(0), Some(4_000_000), 100).unwrap().clock,
            CpuClock::Schedstat
        );
        // 50 ticks = 500 ms against 100 ms of live threads: threads exited, ticks win.
        let c = choose_cpu(Some(50), Some(100_000_000), 100).unwrap();
        assert_eq!((c.time, c.clock), (ms(500), CpuClock::Ticks));
        // No schedstat: ticks.
        let c = choose_cpu(Some(7), None, 100).unwrap();
        assert_eq!((c.time, c.clock), (ms(70), CpuClock::Ticks));
        assert_eq!(choose_cpu(None, None, 100), None);
        assert_eq!(
            choose_cpu(None, Some(9), 100).unwrap().clock,
            CpuClock::Schedstat
        );
    }

    #[test]
    fn reads_own_threads() {
        // Either schedstat is kept (some thread has run) or the error says why.
        match ProcTarget::this().thread_cpu_ns() {
            Ok(m) => assert!(!m.is_empty()),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
        }
    }

    #[test]
    fn parses_status_values() {
        assert_eq!(
            parse_status_kib("Name: x\nVmHWM:\t  2048 kB\n", "VmHWM:"),
            Some(2048)
        );
        assert_eq!(parse_status_kib("Name: x\n", "VmHWM:"), None);
    }
}
