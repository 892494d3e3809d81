//! CPU time and memory of processes, read from `/proc`, and a description of the machine.
//!
//! CPU time is `utime + stime` of `/proc/PID/stat` (all threads, including exited ones), in
//! clock ticks of `getconf CLK_TCK` (usually 100 per second, so 10 ms resolution: rows must run
//! long enough for the per-request figure to mean something). Peak RSS is `VmHWM` of
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

/// CPU ticks of each process of a [`CpuMeter`] at one instant.
#[derive(Debug, Clone)]
pub struct CpuSample {
    ticks: Vec<Option<u64>>,
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
    /// [`ProcTarget::reset_peak_rss`]) and reads its CPU ticks.
    #[must_use]
    pub fn start(&self) -> CpuSample {
        for (_, t) in &self.targets {
            t.reset_peak_rss();
        }
        self.sample()
    }

    /// Reads every process's CPU ticks now; a process that cannot be read is `None`.
    #[must_use]
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            ticks: self
                .targets
                .iter()
                .map(|(_, t)| t.cpu_ticks().ok())
                .collect(),
        }
    }

    /// CPU time each process used between two samples, by name. Processes that could not be
    /// read in either sample are left out.
    #[must_use]
    pub fn used(&self, before: &CpuSample, after: &CpuSample) -> BTreeMap<String, Duration> {
        let tick = Duration::from_secs(1) / u32::try_from(self.ticks_per_second).unwrap_or(100);
        self.targets
            .iter()
            .zip(before.ticks.iter().zip(&after.ticks))
            .filter_map(|((name, _), (b, a))| {
                let delta = a.as_ref()?.saturating_sub(*b.as_ref()?);
                Some((
                    name.clone(),
                    tick * u32::try_from(delta).unwrap_or(u32::MAX),
                ))
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
    fn parses_status_values() {
        assert_eq!(
            parse_status_kib("Name: x\nVmHWM:\t  2048 kB\n", "VmHWM:"),
            Some(2048)
        );
        assert_eq!(parse_status_kib("Name: x\n", "VmHWM:"), None);
    }
}
