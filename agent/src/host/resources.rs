//! Host resource sampling (CPU, load, memory, swap, disks, uptime) with warn/critical
//! levels from `[thresholds]`.

use std::collections::BTreeSet;

use hoist_proto::v1::{DiskUsage, HostResources, Level as WireLevel};
use sysinfo::{Disks, System};

use crate::config::{Level, Thresholds};

/// File systems that say nothing about the host's storage.
const PSEUDO_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "overlay",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "nsfs",
    "ramfs",
    "autofs",
    "fuse.lxcfs",
    "efivarfs",
];

/// Keeps the sysinfo state between samples so CPU usage is measured over the interval.
pub struct Sampler {
    system: System,
    disks: Disks,
    primed: bool,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler {
            system: System::new(),
            disks: Disks::new(),
            primed: false,
        }
    }

    /// Blocking: reads /proc and statfs. Call from `spawn_blocking`.
    pub fn sample(&mut self, thresholds: &Thresholds) -> HostResources {
        if !self.primed {
            // CPU usage is a difference between two readings.
            self.system.refresh_cpu_usage();
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            self.primed = true;
        }
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        let load = System::load_average();
        let cpu = f64::from(self.system.global_cpu_usage());
        let memory_used = self.system.used_memory();
        let memory_total = self.system.total_memory();

        let mut seen = BTreeSet::new();
        let mut disks = Vec::new();
        for disk in self.disks.list() {
            let fs = disk.file_system().to_string_lossy();
            let mount = disk.mount_point().to_string_lossy().into_owned();
            if PSEUDO_FS.contains(&fs.as_ref()) || disk.total_space() == 0 {
                continue;
            }
            // One entry per mount point (bind mounts repeat).
            if !seen.insert(mount.clone()) {
                continue;
            }
            let used = disk.total_space().saturating_sub(disk.available_space());
            disks.push(DiskUsage {
                level: wire(thresholds.disk.level(percent(used, disk.total_space()))).into(),
                mount,
                used_bytes: used,
                total_bytes: disk.total_space(),
            });
        }
        HostResources {
            cpu_percent: cpu,
            cpu_level: wire(thresholds.cpu.level(cpu)).into(),
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            memory_used_bytes: memory_used,
            memory_total_bytes: memory_total,
            memory_level: wire(thresholds.memory.level(percent(memory_used, memory_total))).into(),
            swap_used_bytes: self.system.used_swap(),
            swap_total_bytes: self.system.total_swap(),
            disks,
            uptime_seconds: System::uptime(),
            agent_resident_memory_bytes: resident_memory_bytes(),
        }
    }
}

pub fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

pub fn wire(level: Level) -> WireLevel {
    match level {
        Level::Ok => WireLevel::Ok,
        Level::Warn => WireLevel::Warn,
        Level::Critical => WireLevel::Critical,
    }
}

/// The standard `process_*` figures of this process, from `/proc/self`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Unix time.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// Reads [`ProcessStats`]; fields it cannot read stay 0.
pub fn process_stats() -> ProcessStats {
    let mut stats = ProcessStats {
        resident_bytes: resident_memory_bytes(),
        ..Default::default()
    };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // After the command name in parentheses (which may hold spaces): field 3 on.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        stats.cpu_seconds = (field(14).unwrap_or(0.0) + field(15).unwrap_or(0.0)) / ticks;
        stats.virtual_bytes = field(23).unwrap_or(0.0) as u64;
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|b| b.trim().parse::<f64>().ok())
        });
        if let (Some(boot), Some(start)) = (boot, field(22)) {
            stats.start_time_seconds = boot + start / ticks;
        }
    }
    stats.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    stats.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    stats
}

/// This process's resident set, from /proc/self/statm (pages × page size).
pub fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    pages * page
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn process_stats_are_read_from_proc() {
        let s = process_stats();
        assert!(
            s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes,
            "{s:?}"
        );
        assert!(s.open_fds >= 3 && s.max_fds >= s.open_fds, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds > 1.0e9 && s.start_time_seconds <= now + 1.0,
            "{s:?}"
        );
    }
}
