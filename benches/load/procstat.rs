//! Process accounting from /proc and getrusage: server CPU seconds and memory,
//! the generator's own CPU, and the open-files limit.

use std::fs;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU seconds since the process started (all threads).
    pub cpu_secs: f64,
    /// Resident set now, KiB (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set, KiB (VmHWM): since start, or since [`reset_peak`].
    pub hwm_kib: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Reads /proc/PID/stat and /proc/PID/status; `None` once the process is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 of stat is fields[0] here; utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Sample {
        cpu_secs: (utime + stime) / clock_ticks(),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// Resets the peak-RSS mark of a process (Linux `clear_refs` value 5), so a
/// workload's peak excludes its set-up. False when the kernel refused.
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Raises the soft open-files limit to the hard limit (children inherit it).
/// Returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: plain get/setrlimit on a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur as u64;
            }
        }
        limit.rlim_cur as u64
    }
}

/// What a process spent during one measured phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    pub cpu_secs: f64,
    /// Peak RSS during the phase (or since start when the reset was refused), KiB.
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    /// RSS when the phase started, KiB.
    pub rss_start_kib: u64,
    pub peak_is_phase_only: bool,
}

/// Brackets a measured phase for the server and the generator.
pub struct Meter {
    pid: Option<u32>,
    server_start: Sample,
    self_start: f64,
    peak_reset: bool,
}

/// The server's and the generator's usage during a phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PhaseUsage {
    pub server: Usage,
    pub generator_cpu_secs: f64,
}

impl Meter {
    pub fn start(pid: Option<u32>) -> Meter {
        let peak_reset = pid.map(reset_peak).unwrap_or(false);
        Meter {
            pid,
            server_start: pid.and_then(sample).unwrap_or_default(),
            self_start: self_cpu_secs(),
            peak_reset,
        }
    }

    pub fn stop(&self) -> PhaseUsage {
        let end = self.pid.and_then(sample).unwrap_or_default();
        PhaseUsage {
            server: Usage {
                cpu_secs: (end.cpu_secs - self.server_start.cpu_secs).max(0.0),
                peak_rss_kib: end.hwm_kib,
                rss_kib: end.rss_kib,
                rss_start_kib: self.server_start.rss_kib,
                peak_is_phase_only: self.peak_reset,
            },
            generator_cpu_secs: self_cpu_secs() - self.self_start,
        }
    }
}
