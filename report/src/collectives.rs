//! Collectives matched across the ranks of one server, by the identity
//! `--align collectives` uses (JAX `run_id` + `hlo_op`, NCCL process group +
//! `Seq`), occurrence by occurrence: who arrived last (the straggler), how
//! far apart the arrivals were (skew), and how long each early rank waited.

use std::collections::BTreeMap;

use crate::intervals::percentile;
use crate::rank::RankFacts;
use crate::{CollectivesReport, Heatmap};

/// Matches the collectives of `ranks` (in report order) server by server.
pub fn matched(ranks: &[RankFacts]) -> CollectivesReport {
    let mut servers: BTreeMap<(&str, u32), Vec<usize>> = BTreeMap::new();
    for (i, rank) in ranks.iter().enumerate() {
        servers
            .entry((rank.role_word(), rank.worker))
            .or_default()
            .push(i);
    }
    let mut report = CollectivesReport::default();
    let mut skews = Vec::new();
    for rank in ranks {
        report.straggler_counts.insert(rank.label.clone(), 0);
        report.wait_charged_ns.insert(rank.label.clone(), 0);
        report.lateness_ns.insert(rank.label.clone(), 0);
    }
    for ((role, worker), members) in servers {
        if members.len() < 2 {
            continue;
        }
        // The steps of the first member with steps are the heat map's columns.
        let columns = members
            .iter()
            .map(|&i| &ranks[i].steps)
            .find(|steps| !steps.is_empty());
        let mut cells = vec![vec![0i64; columns.map_or(0, Vec::len)]; members.len()];
        let mut stragglers = vec![vec![0u32; columns.map_or(0, Vec::len)]; members.len()];
        let mut ids: Vec<_> = members
            .iter()
            .flat_map(|&i| ranks[i].collectives.keys())
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let taking_part: Vec<(usize, &Vec<(i64, i64)>)> = members
                .iter()
                .enumerate()
                .filter_map(|(m, &i)| Some((m, ranks[i].collectives.get(id)?)))
                .collect();
            let count = taking_part[0].1.len();
            if taking_part.len() < 2 || taking_part.iter().any(|(_, o)| o.len() != count) {
                continue;
            }
            for occurrence in 0..count {
                let arrivals: Vec<(usize, i64)> = taking_part
                    .iter()
                    .map(|(m, o)| (*m, o[occurrence].0))
                    .collect();
                let first = arrivals.iter().map(|a| a.1).min().unwrap_or(0);
                // Ties go to the first member in rank order.
                let (late_member, last) =
                    arrivals
                        .iter()
                        .copied()
                        .fold(
                            (usize::MAX, i64::MIN),
                            |best, a| if a.1 > best.1 { a } else { best },
                        );
                report.matched += 1;
                skews.push(last - first);
                *report
                    .straggler_counts
                    .entry(ranks[members[late_member]].label.clone())
                    .or_default() += 1;
                for &(m, at) in &arrivals {
                    let label = &ranks[members[m]].label;
                    *report.wait_charged_ns.entry(label.clone()).or_default() += last - at;
                    *report.lateness_ns.entry(label.clone()).or_default() += at - first;
                }
                let column = columns.and_then(|steps| {
                    let after = steps.partition_point(|s| s.start_ns <= first);
                    after.checked_sub(1).filter(|&k| first < steps[k].end_ns)
                });
                if let Some(column) = column {
                    for &(m, at) in &arrivals {
                        cells[m][column] += at - first;
                    }
                    stragglers[late_member][column] += 1;
                }
            }
        }
        if let Some(steps) = columns {
            report.heatmaps.push(Heatmap {
                server: format!("{role}-{worker}"),
                ranks: members.iter().map(|&i| ranks[i].label.clone()).collect(),
                steps: steps.iter().map(|s| s.index).collect(),
                lateness_ns: cells,
                stragglers,
            });
        }
    }
    skews.sort_unstable();
    report.skew_p50_ns = percentile(&skews, 50);
    report.skew_p90_ns = percentile(&skews, 90);
    report.skew_p99_ns = percentile(&skews, 99);
    report.skew_max_ns = skews.last().copied().unwrap_or(0);
    report
}
