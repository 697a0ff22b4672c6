//! The session's absolute time base, read from the `Task Environment` plane
//! without decoding the (possibly huge) host and device planes, and what a
//! line's `timestamp_ns` means.

use std::io::Read;

use crate::stream::{stat_metadata_entry, StatValue, StatView};
use crate::wire::{FieldReader, WireValue};
use crate::XplaneError;

/// The plane JAX puts session-wide stats on.
pub const TASK_ENVIRONMENT_PLANE: &str = "Task Environment";

/// The largest plane name or Task Environment stat read; bigger fields are
/// skipped unread.
const MAX_SMALL_FIELD: u64 = 64 << 10;

/// Line timestamps below this many nanoseconds (about March 1973) are not
/// epoch instants.
pub const RELATIVE_LINE_TIMESTAMP_BELOW_NS: i64 = 100_000_000_000_000_000;

/// `profile_start_time` / `profile_stop_time` of a session, epoch ns on the
/// profiled host's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileTimes {
    pub start_unix_ns: Option<i64>,
    pub stop_unix_ns: Option<i64>,
}

/// Where a line starts, in epoch ns on the profiled host's clock.
///
/// The XPlane schema says `XLine.timestamp_ns` is epoch nanoseconds, but
/// the files JAX writes (checked on every real fixture) store it relative
/// to the session's `profile_start_time` (values like 40723). A timestamp
/// far below any plausible epoch instant
/// ([`RELATIVE_LINE_TIMESTAMP_BELOW_NS`]) is therefore taken as relative to
/// `session_start_unix_ns`, and an epoch one as it is.
pub fn line_start_unix_ns(timestamp_ns: i64, session_start_unix_ns: i64) -> i64 {
    if timestamp_ns.unsigned_abs() < RELATIVE_LINE_TIMESTAMP_BELOW_NS as u64 {
        session_start_unix_ns.saturating_add(timestamp_ns)
    } else {
        timestamp_ns
    }
}

/// The profile times among a plane's stats, given their names.
pub(crate) fn profile_times_from<'s>(
    name_of: impl Fn(i64) -> Option<&'s str>,
    stats: impl IntoIterator<Item = (i64, StatValue<'s>)>,
) -> ProfileTimes {
    let mut times = ProfileTimes::default();
    for (id, value) in stats {
        let value = match value {
            StatValue::Int64(v) => Some(v),
            StatValue::Uint64(v) => i64::try_from(v).ok(),
            StatValue::Double(v) => Some(v as i64),
            _ => None,
        };
        match name_of(id) {
            Some("profile_start_time") => times.start_unix_ns = value,
            Some("profile_stop_time") => times.stop_unix_ns = value,
            _ => {}
        }
    }
    times
}

/// Finds the profile start and stop times in an XSpace stream. Planes other
/// than `Task Environment` are skipped as soon as their name is known, and
/// lines are never decoded, so this reads at disk speed with tiny memory.
/// (Seekable files can use [`crate::XSpaceFile::profile_times`], which
/// does not read the skipped planes at all.)
pub fn read_profile_times<R: Read>(reader: R) -> Result<ProfileTimes, XplaneError> {
    let mut space = FieldReader::new(reader);
    while let Some(field) = space.next_field()? {
        let WireValue::Len(len) = field.value else {
            continue;
        };
        if field.number != 1 {
            space.skip(len)?;
            continue;
        }
        let mut plane = space.nested(len);
        let mut name: Option<String> = None;
        let mut stat_names: Vec<(i64, String)> = Vec::new();
        let mut stats: Vec<Vec<u8>> = Vec::new();
        while let Some(f) = plane.next_field()? {
            let WireValue::Len(n) = f.value else {
                continue;
            };
            // Plane names and Task Environment stats are small; anything
            // bigger is some other plane's (or damage) and is skipped.
            if n > MAX_SMALL_FIELD && matches!(f.number, 2 | 5 | 6) {
                plane.skip(n)?;
                continue;
            }
            match f.number {
                2 => {
                    let text = String::from_utf8_lossy(&plane.read_bytes(n)?).into_owned();
                    let wanted = text == TASK_ENVIRONMENT_PLANE;
                    name = Some(text);
                    if !wanted {
                        break;
                    }
                }
                5 => stat_names.push(stat_metadata_entry(&plane.read_bytes(n)?, 0)?),
                6 => stats.push(plane.read_bytes(n)?),
                _ => plane.skip(n)?,
            }
        }
        plane.finish()?;
        if name.as_deref() != Some(TASK_ENVIRONMENT_PLANE) {
            continue;
        }
        let mut parsed = Vec::with_capacity(stats.len());
        for stat in &stats {
            let stat = StatView::parse(stat, 0)?;
            parsed.push((stat.metadata_id, stat.value));
        }
        return Ok(profile_times_from(
            |id| {
                stat_names
                    .iter()
                    .find(|(known, _)| *known == id)
                    .map(|(_, name)| name.as_str())
            },
            parsed,
        ));
    }
    Ok(ProfileTimes::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::x_stat::Value;
    use crate::{XLine, XPlane, XSpace, XStat, XStatMetadata};
    use prost::Message;
    use std::collections::HashMap;

    fn task_environment(start: i64, stop: i64) -> XPlane {
        let mut stat_metadata = HashMap::new();
        for (id, name) in [(1, "profile_start_time"), (2, "profile_stop_time")] {
            stat_metadata.insert(
                id,
                XStatMetadata {
                    id,
                    name: name.into(),
                    description: String::new(),
                },
            );
        }
        XPlane {
            id: 3,
            name: TASK_ENVIRONMENT_PLANE.into(),
            stat_metadata,
            stats: vec![
                XStat {
                    metadata_id: 1,
                    value: Some(Value::Uint64Value(start as u64)),
                },
                XStat {
                    metadata_id: 2,
                    value: Some(Value::Int64Value(stop)),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn finds_the_times_after_a_big_plane() {
        let host = XPlane {
            id: 1,
            name: "/host:CPU".into(),
            lines: vec![XLine {
                name: "python".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let space = XSpace {
            planes: vec![
                host,
                task_environment(1_795_384_060_465_391_136, 1_795_384_060_513_144_397),
            ],
            ..Default::default()
        };
        let times = read_profile_times(&space.encode_to_vec()[..]).unwrap();
        assert_eq!(times.start_unix_ns, Some(1_795_384_060_465_391_136));
        assert_eq!(times.stop_unix_ns, Some(1_795_384_060_513_144_397));
    }

    #[test]
    fn small_line_timestamps_are_relative_to_the_session_start() {
        let start = 1_795_384_060_465_391_136;
        assert_eq!(line_start_unix_ns(40_723, start), start + 40_723);
        assert_eq!(line_start_unix_ns(-5, start), start - 5);
        assert_eq!(line_start_unix_ns(start + 9, 0), start + 9);
        assert_eq!(line_start_unix_ns(start + 9, start), start + 9);
    }

    #[test]
    fn no_task_environment_means_no_times() {
        let times = read_profile_times(&XSpace::default().encode_to_vec()[..]).unwrap();
        assert_eq!(times, ProfileTimes::default());
    }

    #[test]
    fn reads_the_real_jax_fixture() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/real-jax/jax_multi4/proc0/plugins/profile/2026_11_22_21_47_40/vm.xplane.pb"
        );
        let Ok(file) = std::fs::File::open(dir) else {
            panic!("fixture missing: {dir}");
        };
        let times = read_profile_times(std::io::BufReader::new(file)).unwrap();
        assert_eq!(times.start_unix_ns, Some(1_795_384_060_465_391_136));
        assert_eq!(times.stop_unix_ns, Some(1_795_384_060_513_144_397));
    }
}
