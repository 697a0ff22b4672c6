//! The session's absolute time base, read from the `Task Environment` plane
//! without decoding the (possibly huge) host and device planes.

use std::io::Read;

use prost::Message;

use crate::messages::x_stat::Value;
use crate::wire::{FieldReader, WireValue};
use crate::{XStat, XStatMetadata, XplaneError};

/// The plane JAX puts session-wide stats on.
pub const TASK_ENVIRONMENT_PLANE: &str = "Task Environment";

/// `profile_start_time` / `profile_stop_time` of a session, epoch ns on the
/// profiled host's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileTimes {
    pub start_unix_ns: Option<i64>,
    pub stop_unix_ns: Option<i64>,
}

/// A map<int64, XStatMetadata> entry as it is on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct StatMetadataEntry {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(message, optional, tag = "2")]
    value: Option<XStatMetadata>,
}

/// Finds the profile start and stop times in an XSpace stream. Planes other
/// than `Task Environment` are skipped as soon as their name is known, and
/// lines are never decoded, so this reads at disk speed with tiny memory.
pub fn read_profile_times<R: Read>(reader: R) -> Result<ProfileTimes, XplaneError> {
    let mut space = FieldReader::new(reader);
    let mut times = ProfileTimes::default();
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
        let mut stats: Vec<XStat> = Vec::new();
        while let Some(f) = plane.next_field()? {
            let WireValue::Len(n) = f.value else {
                continue;
            };
            match f.number {
                2 => {
                    let text = String::from_utf8_lossy(&plane.read_bytes(n)?).into_owned();
                    let wanted = text == TASK_ENVIRONMENT_PLANE;
                    name = Some(text);
                    if !wanted {
                        break;
                    }
                }
                5 => {
                    let entry = StatMetadataEntry::decode(&plane.read_bytes(n)?[..])?;
                    if let Some(meta) = entry.value {
                        stat_names.push((entry.key, meta.name));
                    }
                }
                6 => stats.push(XStat::decode(&plane.read_bytes(n)?[..])?),
                _ => plane.skip(n)?,
            }
        }
        plane.finish()?;
        if name.as_deref() != Some(TASK_ENVIRONMENT_PLANE) {
            continue;
        }
        for stat in &stats {
            let Some((_, stat_name)) = stat_names.iter().find(|(id, _)| *id == stat.metadata_id)
            else {
                continue;
            };
            let value = match stat.value {
                Some(Value::Int64Value(v)) => Some(v),
                Some(Value::Uint64Value(v)) => i64::try_from(v).ok(),
                Some(Value::DoubleValue(v)) => Some(v as i64),
                _ => None,
            };
            match stat_name.as_str() {
                "profile_start_time" => times.start_unix_ns = value,
                "profile_stop_time" => times.stop_unix_ns = value,
                _ => {}
            }
        }
        return Ok(times);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{XLine, XPlane, XSpace};
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
    fn no_task_environment_means_no_times() {
        let times = read_profile_times(&XSpace::default().encode_to_vec()[..]).unwrap();
        assert_eq!(times, ProfileTimes::default());
    }

    #[test]
    fn reads_the_real_jax_fixture() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/real-jax/jax_multi4/proc0/plugins/profile/2026_11_22_21_47_40/vm.xplane.pb"
        );
        let Ok(file) = std::fs::File::open(dir) else {
            panic!("fixture missing: {dir}");
        };
        let times = read_profile_times(std::io::BufReader::new(file)).unwrap();
        assert_eq!(times.start_unix_ns, Some(1_795_384_060_465_391_136));
        assert_eq!(times.stop_unix_ns, Some(1_795_384_060_513_144_397));
    }
}
