//! Time covered by sets of intervals: the union of a track's slices (busy
//! time), and what two unions share (compute overlapping communication).

/// Sorts `spans` and merges the overlapping or touching ones, in place.
pub fn union(spans: &mut Vec<(i64, i64)>) {
    spans.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(spans.len().min(1 << 16));
    for &(start, end) in spans.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *spans = merged;
}

/// Total length of disjoint, sorted `spans`.
pub fn covered(spans: &[(i64, i64)]) -> i64 {
    spans.iter().map(|(s, e)| e - s).sum()
}

/// Length of the intersection of two disjoint, sorted sets.
pub fn shared(a: &[(i64, i64)], b: &[(i64, i64)]) -> i64 {
    let (mut i, mut j, mut total) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if end > start {
            total += end - start;
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

/// Nearest-rank percentile `p` (0-100) of sorted `values`; 0 when empty.
pub fn percentile(sorted: &[i64], p: u32) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unions_merge_overlaps_and_keep_gaps() {
        let mut spans = vec![(10, 20), (0, 5), (15, 30), (30, 31), (40, 41)];
        union(&mut spans);
        assert_eq!(spans, [(0, 5), (10, 31), (40, 41)]);
        assert_eq!(covered(&spans), 27);
    }

    #[test]
    fn intersections() {
        assert_eq!(shared(&[(0, 10), (20, 30)], &[(5, 25)]), 10);
        assert_eq!(shared(&[(0, 10)], &[(10, 20)]), 0);
        assert_eq!(shared(&[], &[(0, 1)]), 0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), 50);
        assert_eq!(percentile(&values, 99), 99);
        assert_eq!(percentile(&[7], 90), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
        assert_eq!(percentile(&[], 50), 0);
    }
}
