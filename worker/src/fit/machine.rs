//! How much memory the machine gives the models: Linux's `/proc/meminfo` `MemTotal`, lowered by
//! a cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) when that is lower; and the
//! sizes an operator writes (`8GiB`, `512MiB`, `16G`, plain bytes).

use std::fmt;
use std::path::Path;

use super::FitError;

/// Where the memory limit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// The operator's `--memory-limit` (`LCW_MEMORY_LIMIT`).
    Given,
    /// `/proc/meminfo`'s `MemTotal`.
    MemTotal,
    /// A cgroup's memory limit, lower than `MemTotal` (the file it was read from).
    Cgroup(String),
}

impl fmt::Display for LimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitSource::Given => f.write_str("--memory-limit"),
            LimitSource::MemTotal => f.write_str("MemTotal in /proc/meminfo"),
            LimitSource::Cgroup(path) => write!(f, "the cgroup limit in {path}"),
        }
    }
}

/// The memory the served models may fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure came from.
    pub source: LimitSource,
}

impl Limit {
    /// The operator's limit.
    pub fn given(bytes: u64) -> Limit {
        Limit { bytes, source: LimitSource::Given }
    }
}

/// The machine's memory: `MemTotal`, or this process's cgroup limit when that is lower.
pub fn detect() -> Result<Limit, FitError> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|source| FitError::Memory { path: "/proc/meminfo".into(), source })?;
    let total = mem_total(&meminfo).ok_or(FitError::NoMemTotal)?;
    let mut limit = Limit { bytes: total, source: LimitSource::MemTotal };
    for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
        if let Some(max) = std::fs::read_to_string(Path::new(path)).ok().as_deref().and_then(cgroup_max)
            && max < limit.bytes
        {
            limit = Limit { bytes: max, source: LimitSource::Cgroup(path.into()) };
        }
    }
    Ok(limit)
}

/// `MemTotal` from `/proc/meminfo`'s text, in bytes (the file counts kB, which are KiB).
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?.trim();
        let kib: u64 = rest.strip_suffix("kB").unwrap_or(rest).trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// A cgroup memory limit file's value; `max` (v2) or v1's "unlimited" (a page-rounded
/// `i64::MAX`) are no limit.
pub fn cgroup_max(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 62).then_some(value)
}

/// A size as operators write it: `8GiB`, `512MiB`, `1.5GiB`, `16G` (= GiB, as `docker --memory`
/// and systemd's `MemoryMax=` read it), `2000000000` bytes.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!("`{s}` has an unknown unit `{other}`: write the size as 8GiB, 512MiB or bytes"));
        }
    };
    let value: f64 = number.parse().map_err(|_| format!("`{s}` is not a size: write it as 8GiB, 512MiB or bytes"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a usable memory size: give more than 0 bytes, e.g. 8GiB"));
    }
    Ok(bytes.round() as u64)
}

/// `253113024` → `241.4 MiB`; binary units, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size(" 16G "), Ok(16 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2000000000"), Ok(2_000_000_000));
        assert_eq!(parse_size("300 mb"), Ok(300 << 20));
        assert!(parse_size("8 parsecs").unwrap_err().contains("unknown unit `parsecs`"));
        assert!(parse_size("GiB").unwrap_err().contains("not a size"));
        assert!(parse_size("0").unwrap_err().contains("more than 0 bytes"));
    }

    #[test]
    fn meminfo_and_cgroup_files_are_read() {
        let meminfo = "MemTotal:       24683772 kB\nMemFree:        17665464 kB\nMemAvailable:   23889680 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_683_772 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(cgroup_max("max\n"), None);
        assert_eq!(cgroup_max("9223372036854771712\n"), None, "cgroup v1's unlimited");
        assert_eq!(cgroup_max("4294967296\n"), Some(4 << 30));
    }

    #[test]
    fn the_machine_has_some_memory() {
        let limit = detect().unwrap();
        assert!(limit.bytes > 64 << 20, "{limit:?}");
    }

    #[test]
    fn bytes_read_as_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(253_113_024), "241.4 MiB");
        assert_eq!(human_bytes(8 << 30), "8.0 GiB");
    }
}
