//! Where shadow-log files live: Hive partition directories, file names, temporary names.
//!
//! `<dir>/model=<m>/date=YYYY-MM-DD/hour=HH/<pod>-<start>-<seq>.parquet`, with `date` and
//! `hour` taken from each row's UTC timestamp. A file being written is named
//! `.<final name>.tmp` in the same directory: the leading `.` hides it from pyarrow and
//! Spark, and the `.tmp` suffix from `*.parquet` globs (DuckDB, Trino).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directory under the log root where unreadable leftovers are moved; the leading `_`
/// makes pyarrow and Spark skip it, and nothing in it ends in `.parquet`.
pub const QUARANTINE_DIR: &str = "_quarantine";

const TEMP_SUFFIX: &str = ".tmp";
const PARQUET_SUFFIX: &str = ".parquet";
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// One Hive partition: a model and one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    pub model: Arc<str>,
    /// Whole hours since the Unix epoch (UTC), floored.
    pub hour: i64,
}

impl Partition {
    pub fn of(model: &Arc<str>, ts_micros: i64) -> Self {
        Partition {
            model: Arc::clone(model),
            hour: ts_micros.div_euclid(MICROS_PER_HOUR),
        }
    }

    /// `<root>/model=<m>/date=YYYY-MM-DD/hour=HH`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        let (y, m, d) = civil_from_days(self.hour.div_euclid(24));
        let hh = self.hour.rem_euclid(24);
        root.join(format!("model={}", path_segment(&self.model)))
            .join(format!("date={y:04}-{m:02}-{d:02}"))
            .join(format!("hour={hh:02}"))
    }
}

/// `<pod>-<start>-<seq>.parquet`; `start` identifies the writer run, `seq` the file in it.
pub(crate) fn file_name(pod: &str, start: &str, seq: u64) -> String {
    format!("{}-{start}-{seq:06}{PARQUET_SUFFIX}", path_segment(pod))
}

/// The name a file carries while it is written.
pub(crate) fn temp_name(final_name: &str) -> String {
    format!(".{final_name}{TEMP_SUFFIX}")
}

/// The final name of a temporary file, or `None` if `name` is not one of ours.
pub(crate) fn final_name_of_temp(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    (inner.ends_with(PARQUET_SUFFIX) && inner.len() > PARQUET_SUFFIX.len()).then_some(inner)
}

/// Compact UTC stamp to the microsecond, e.g. `20261105T120000123456Z`: sorts by time
/// and differs between two runs of the same pod.
pub(crate) fn compact_utc(ts_micros: i64) -> String {
    let secs = ts_micros.div_euclid(1_000_000);
    let micros = ts_micros.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Model and pod names become one path segment: bytes outside `[A-Za-z0-9._-]` are
/// percent-encoded (pyarrow's hive partitioning decodes them back), so a name can never
/// add a directory level or an `=`.
fn path_segment(s: &str) -> Cow<'_, str> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    // A leading '.' or '_' would hide the directory or file from readers.
    let hidden = s.starts_with(['.', '_']);
    if !hidden && !s.is_empty() && s.bytes().all(safe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, b) in s.bytes().enumerate() {
        if safe(b) && !(i == 0 && hidden) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    Cow::Owned(out)
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
/// Howard Hinnant's `civil_from_days`: exact for every `i64` day we can meet.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d and m are in the small ranges noted above.
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inverse of `civil_from_days` (Hinnant's `days_from_civil`), test-only.
    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(m);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_397), (2025, 11, 5));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
    }

    #[test]
    fn partition_dir_and_names() {
        // 2026-11-05T23:59:59.999999Z and one microsecond later.
        let ts = days_from_civil(2026, 11, 6) * 86_400_000_000 - 1;
        let model: Arc<str> = Arc::from("llm-inference");
        let a = Partition::of(&model, ts);
        let b = Partition::of(&model, ts + 1);
        assert_eq!(
            a.dir(Path::new("/r")),
            Path::new("/r/model=llm-inference/date=2026-11-05/hour=23")
        );
        assert_eq!(
            b.dir(Path::new("/r")),
            Path::new("/r/model=llm-inference/date=2026-11-06/hour=00")
        );
        assert_eq!(compact_utc(ts), "20261105T235959999999Z");
        let name = file_name("pod-0", "S", 7);
        assert_eq!(name, "pod-0-S-000007.parquet");
        assert_eq!(temp_name(&name), ".pod-0-S-000007.parquet.tmp");
        assert_eq!(final_name_of_temp(&temp_name(&name)), Some(name.as_str()));
        assert_eq!(final_name_of_temp(".x.tmp"), None);
        assert_eq!(final_name_of_temp("a.parquet"), None);
    }

    #[test]
    fn unsafe_names_stay_one_hidden_free_segment() {
        assert_eq!(path_segment("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(path_segment(".x"), "%2Ex");
        assert_eq!(path_segment("_x"), "%5Fx");
        assert_eq!(path_segment(""), "%00");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    proptest! {
        #[test]
        fn civil_round_trips(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
