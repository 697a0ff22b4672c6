//! What a run amounts to: the summary (`sent`, `ok`, `failed`, distinct
//! errors, latency percentiles) and `workload.json`, a Chrome JSON trace
//! with one slice per request on the coordinator's clock.

use std::collections::HashMap;

use rankline_layout::{WorkloadError as ErrorCount, WorkloadSummary, WORKLOAD_FORMAT};
use serde_json::{json, Value};

use crate::driver::{Driver, Outcome, RequestRecord};

/// Sums up `records`. A request a server refused (4xx) fails the workload:
/// the requests are malformed for that server and the profile shows no
/// real work. So does a window without one successful request, unless
/// `allow_idle`.
pub fn summarize(driver: &Driver, records: &[RequestRecord], allow_idle: bool) -> WorkloadSummary {
    let kind = driver.spec().kind;
    let mut latencies: Vec<f64> = Vec::new();
    let (mut prompt_tokens, mut output_tokens) = (0, 0);
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut refused = None;
    for record in records {
        match &record.outcome {
            Outcome::Ok {
                prompt_tokens: p,
                output_tokens: o,
            } => {
                latencies.push(record.latency_ms());
                prompt_tokens += p;
                output_tokens += o;
            }
            Outcome::Failed { status, message } => {
                let url = &driver.targets()[record.target];
                let status = status.map_or_else(String::new, |s| format!("HTTP {s}: "));
                let line = format!("{url}{} answered {status}{message}", kind.path());
                if record.refused() && refused.is_none() {
                    refused = Some(line.clone());
                }
                *errors.entry(line).or_default() += 1;
            }
        }
    }
    let ok = latencies.len() as u64;
    let sent = records.len() as u64;
    let mut errors: Vec<ErrorCount> = errors
        .into_iter()
        .map(|(message, count)| ErrorCount { message, count })
        .collect();
    errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.message.cmp(&b.message)));
    latencies.sort_by(f64::total_cmp);
    let reason = match (&refused, ok) {
        (Some(line), _) => Some(format!("the server refused the requests: {line}")),
        (None, 0) if !allow_idle => Some(match errors.first() {
            Some(first) => format!("no request succeeded ({sent} sent; {})", first.message),
            None => "no request was sent inside the profiling window".to_string(),
        }),
        _ => None,
    };
    WorkloadSummary {
        spec: driver.spec().text.clone(),
        model: driver.model().to_string(),
        targets: driver.targets().to_vec(),
        sent,
        ok,
        failed: sent - ok,
        errors,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        prompt_tokens,
        output_tokens,
        warmup: driver.warmup_sent(),
        status: if reason.is_some() { "failed" } else { "ok" }.to_string(),
        reason,
        clock_offset_ns: None,
    }
}

/// Nearest-rank percentile of sorted values, rounded to µs.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let value = sorted[rank.clamp(1, sorted.len()) - 1];
    Some((value * 1000.0).round() / 1000.0)
}

/// `workload.json`: the summary and a trace with one process (the merge
/// names it `requests`), a thread per server and a slice per request. `offset_ns` is the driver's
/// clock minus the coordinator's; `origin_ns` (coordinator clock) becomes
/// `baseTimeNanoseconds`.
pub fn workload_file(
    summary: &WorkloadSummary,
    records: &[RequestRecord],
    kind_name: &str,
    offset_ns: i64,
    origin_ns: i64,
) -> Value {
    // No process_name: the merge names the process `requests` itself, and
    // would otherwise append the source's name to it.
    let mut events = Vec::new();
    for (i, url) in summary.targets.iter().enumerate() {
        events.push(json!({
            "ph": "M", "name": "thread_name", "pid": 1, "tid": i + 1,
            "args": {"name": url},
        }));
    }
    let micros = |unix_ns: i64| (unix_ns - offset_ns - origin_ns) as f64 / 1000.0;
    for record in records {
        let mut args = json!({
            "url": summary.targets[record.target],
            "latency_ms": (record.latency_ms() * 1000.0).round() / 1000.0,
        });
        match &record.outcome {
            Outcome::Ok {
                prompt_tokens,
                output_tokens,
            } => {
                args["status"] = json!("ok");
                args["prompt_tokens"] = json!(prompt_tokens);
                args["output_tokens"] = json!(output_tokens);
            }
            Outcome::Failed { status, message } => {
                args["status"] = json!("failed");
                args["http_status"] = json!(status);
                args["error"] = json!(message);
            }
        }
        let ts = micros(record.start_unix_ns);
        events.push(json!({
            "ph": "X",
            "name": kind_name,
            "cat": "request",
            "pid": 1,
            "tid": record.target + 1,
            "ts": (ts * 1000.0).round() / 1000.0,
            "dur": ((micros(record.end_unix_ns) - ts) * 1000.0).round() / 1000.0,
            "args": args,
        }));
    }
    json!({
        "format": WORKLOAD_FORMAT,
        "baseTimeNanoseconds": origin_ns,
        "workload": summary,
        "traceEvents": events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
