//! File names of a capture series, and UTC time formatting without a
//! date crate (the civil-from-days algorithm, valid for any u64 ns time).

use std::path::{Path, PathBuf};

/// `q{QQ}-{SEQ:08}-{YYYYmmddTHHMMSS.nnnnnnnnnZ}.{ext}`
pub fn file_name(queue: u32, seq: u64, first_ts_ns: u64, ext: &str) -> String {
    format!("q{queue:02}-{seq:08}-{}.{ext}", utc_compact(first_ts_ns))
}

/// The hidden name a file has while it is written.
pub fn hidden(name: &str) -> String {
    format!(".{name}.part")
}

/// The manifest that belongs to a capture file.
pub fn manifest_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    file.with_file_name(name)
}

/// Queue and sequence number from a series file name (visible, hidden or manifest).
pub fn parse(name: &str) -> Option<(u32, u64)> {
    let name = name.strip_prefix('.').unwrap_or(name);
    let rest = name.strip_prefix('q')?;
    let (q, rest) = rest.split_once('-')?;
    let (seq, rest) = rest.split_once('-')?;
    if q.is_empty() || seq.len() < 8 || !rest.contains("Z.erf") {
        return None;
    }
    Some((q.parse().ok()?, seq.parse().ok()?))
}

/// `YYYYmmddTHHMMSS.nnnnnnnnnZ`
pub fn utc_compact(ts_ns: u64) -> String {
    let (y, mo, d, h, mi, s, ns) = civil(ts_ns);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{ns:09}Z")
}

/// `YYYY-mm-ddTHH:MM:SS.nnnnnnnnnZ` (RFC 3339)
pub fn utc_rfc3339(ts_ns: u64) -> String {
    let (y, mo, d, h, mi, s, ns) = civil(ts_ns);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ns:09}Z")
}

fn civil(ts_ns: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let secs = ts_ns / 1_000_000_000;
    let ns = ts_ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Howard Hinnant's days -> civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_times() {
        assert_eq!(utc_compact(0), "19700101T000000.000000000Z");
        // Python: datetime.utcfromtimestamp(1278737779) = 2010-07-10 04:56:19
        assert_eq!(
            utc_compact(1_278_737_779_466_743_000),
            "20100710T045619.466743000Z"
        );
        assert_eq!(
            utc_rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(utc_compact(u64::MAX), "25540721T233433.709551615Z");
    }

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        let a = file_name(3, 9, 1_000_000_000, "erf.lz4");
        let b = file_name(3, 10, 5, "erf.lz4");
        assert!(a < b);
        assert_eq!(parse(&a), Some((3, 9)));
        assert_eq!(parse(&hidden(&b)), Some((3, 10)));
        assert_eq!(parse("capture.pcap"), None);
        assert_eq!(parse("q1-2-x"), None);
        assert_eq!(
            manifest_path(Path::new("/d/q00-00000001-x.erf.lz4")),
            Path::new("/d/q00-00000001-x.erf.lz4.json")
        );
    }
}
