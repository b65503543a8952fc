//! Finding input files: walking the Hive-partitioned shadow-log tree, reading partition
//! values from paths, pruning partitions by model and time before any file is opened,
//! and parsing the timestamps used by `--since` / `--until` and label files.

use std::path::{Path, PathBuf};

use super::AccuracyError;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Partition values read from a path's `key=value` directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    pub model: Option<String>,
    /// Start of the partition's time span, µs since the epoch (UTC).
    pub start_micros: Option<i64>,
    /// Length of that span: an hour with `hour=HH`, else a day.
    pub span_micros: i64,
}

impl Partition {
    /// Reads `model=`, `date=` and `hour=` from the directories of `path`.
    pub fn from_path(path: &Path) -> Partition {
        let mut model = None;
        let mut day = None;
        let mut hour = None;
        let dirs = path.parent().map(|p| p.components()).into_iter().flatten();
        for c in dirs {
            let Some(s) = c.as_os_str().to_str() else {
                continue;
            };
            let Some((k, v)) = s.split_once('=') else {
                continue;
            };
            let v = percent_decode(v);
            match k {
                "model" => model = Some(v),
                "date" => day = parse_date(&v),
                "hour" => hour = v.parse::<i64>().ok().filter(|h| (0..24).contains(h)),
                _ => {}
            }
        }
        let (start_micros, span_micros) = match (day, hour) {
            (Some(d), Some(h)) => (Some(d + h * MICROS_PER_HOUR), MICROS_PER_HOUR),
            (Some(d), None) => (Some(d), MICROS_PER_DAY),
            _ => (None, 0),
        };
        Partition {
            model,
            start_micros,
            span_micros,
        }
    }

    /// Whether rows of this partition can fall in `[since, until)` for `model`.
    /// Unknown partition values never prune.
    pub fn may_match(&self, model: Option<&str>, since: Option<i64>, until: Option<i64>) -> bool {
        if let (Some(want), Some(have)) = (model, self.model.as_deref()) {
            if want != have {
                return false;
            }
        }
        if let Some(start) = self.start_micros {
            let end = start + self.span_micros;
            if since.is_some_and(|s| end <= s) || until.is_some_and(|u| start >= u) {
                return false;
            }
        }
        true
    }
}

/// Hive escapes special characters in partition values as `%XX`.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a file or directory name is hidden from readers (`.tmp`, `_SUCCESS`, ...):
/// the writer's temporary files and Spark/Hadoop markers start this way.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Files under `inputs` (each a file or a directory walked recursively), sorted by path.
/// In directories only names ending in one of `extensions` are taken and hidden names
/// are skipped; a file named explicitly is always taken. A missing input is an error.
pub fn list_files(inputs: &[PathBuf], extensions: &[&str]) -> Result<Vec<PathBuf>, AccuracyError> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| AccuracyError::Io {
            path: input.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            walk(input, extensions, &mut out)?;
        } else {
            out.push(input.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) -> Result<(), AccuracyError> {
    let io = |e| AccuracyError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_hidden(name) {
            continue;
        }
        let path = entry.path();
        let ty = entry.file_type().map_err(io)?;
        // Follow symlinks the way `metadata` does, as Spark and DuckDB do.
        let is_dir = ty.is_dir() || (ty.is_symlink() && path.is_dir());
        if is_dir {
            walk(&path, extensions, out)?;
        } else if extensions.iter().any(|ext| has_extension(name, ext)) {
            out.push(path);
        }
    }
    Ok(())
}

/// Case-insensitive `.ext` suffix test.
pub fn has_extension(name: &str, ext: &str) -> bool {
    name.len() > ext.len() + 1
        && name.as_bytes()[name.len() - ext.len() - 1] == b'.'
        && name[name.len() - ext.len()..].eq_ignore_ascii_case(ext)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` as µs since the epoch at midnight UTC.
fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d) * MICROS_PER_DAY)
}

/// An RFC 3339 / ISO 8601 timestamp as µs since the epoch: `YYYY-MM-DD`, or
/// `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]]` followed by `Z`, `±HH:MM` or nothing (UTC).
/// Fractions beyond microseconds are truncated.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() == 10 {
        return parse_date(s);
    }
    if s.len() < 16 || !s.is_char_boundary(10) {
        return None;
    }
    let date = parse_date(&s[..10])?;
    let sep = s.as_bytes()[10];
    if sep != b'T' && sep != b't' && sep != b' ' {
        return None;
    }
    let rest = &s[11..];
    // Split off the zone designator.
    let (time, offset_micros) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = &z[1..];
        let (hh, mm) = match z.split_once(':') {
            Some((h, m)) => (digits(h)?, digits(m)?),
            None if z.len() == 4 => (digits(&z[..2])?, digits(&z[2..])?),
            None if z.len() == 2 => (digits(z)?, 0),
            None => return None,
        };
        if hh > 23 || mm > 59 {
            return None;
        }
        (t, sign * (hh * 3600 + mm * 60) * MICROS_PER_SECOND)
    } else {
        (rest, 0)
    };
    let mut parts = time.splitn(3, ':');
    let hh = digits(parts.next()?)?;
    let mm = digits(parts.next()?)?;
    let (ss, frac) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = match sec.split_once('.') {
                Some((w, f)) => (w, f),
                None => (sec, ""),
            };
            let ss = digits(whole)?;
            let mut micros = 0i64;
            if !frac.is_empty() {
                if !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                for (i, b) in frac.bytes().take(6).enumerate() {
                    micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
                }
            } else if sec.contains('.') {
                return None;
            }
            (ss, micros)
        }
    };
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(date + (hh * 3600 + mm * 60 + ss) * MICROS_PER_SECOND + frac - offset_micros)
}

/// Seconds since the epoch (possibly fractional) as µs, rounded to the nearest µs.
pub fn seconds_to_micros(s: f64) -> Option<i64> {
    let us = (s * 1e6).round();
    (us.is_finite() && us.abs() < 9.2e18).then_some(us as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_utc_micros() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(
            parse_timestamp("1970-01-02T00:00:00Z"),
            Some(MICROS_PER_DAY)
        );
        assert_eq!(
            parse_timestamp("2024-03-01T10:30"),
            parse_timestamp("2024-03-01 10:30:00Z")
        );
        assert_eq!(
            parse_timestamp("2024-03-01T12:30:00+02:00"),
            parse_timestamp("2024-03-01T10:30:00Z")
        );
        assert_eq!(
            parse_timestamp("2024-03-01T10:30:00.123456789Z").map(|t| t % 1_000_000),
            Some(123_456)
        );
        // 2024-02-29 is a leap day; 2023-02-29 is not.
        assert!(parse_timestamp("2024-02-29").is_some());
        assert_eq!(parse_timestamp("2023-02-29"), None);
        assert_eq!(parse_timestamp("2024-13-01"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2024-03-01T10:30:00.Z"), None);
        // 2021-01-01T00:00:00Z is 1609459200 s.
        assert_eq!(
            parse_timestamp("2021-01-01T00:00:00Z"),
            Some(1_609_459_200_000_000)
        );
    }

    #[test]
    fn partitions_come_from_hive_directories() {
        let p = Partition::from_path(Path::new(
            "/x/model=a%2Fb/date=2021-01-01/hour=05/f.parquet",
        ));
        assert_eq!(p.model.as_deref(), Some("a/b"));
        assert_eq!(
            p.start_micros,
            Some(1_609_459_200_000_000 + 5 * MICROS_PER_HOUR)
        );
        assert_eq!(p.span_micros, MICROS_PER_HOUR);
        let t = p.start_micros.unwrap_or_default();
        assert!(p.may_match(Some("a/b"), Some(t), Some(t + 1)));
        assert!(!p.may_match(Some("c"), None, None));
        assert!(!p.may_match(None, Some(t + MICROS_PER_HOUR), None));
        assert!(p.may_match(None, Some(t + MICROS_PER_HOUR - 1), None));
        assert!(!p.may_match(None, None, Some(t)));
        let unknown = Partition::from_path(Path::new("f.parquet"));
        assert!(unknown.may_match(Some("m"), Some(0), Some(1)));
    }

    #[test]
    fn extensions_and_hidden_names() {
        assert!(has_extension("a.PARQUET", "parquet"));
        assert!(!has_extension("parquet", "parquet"));
        assert!(!has_extension("a.parquet.tmp", "parquet"));
        assert!(is_hidden(".a.parquet") && is_hidden("_SUCCESS") && !is_hidden("a"));
    }
}
