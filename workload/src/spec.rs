//! The workload SPEC: `KIND[:KEY=VALUE,...]`, e.g.
//! `chat:rate=20,prompt=512,output=64,warmup=4`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::WorkloadError;

/// Which API a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// SGLang's native `POST /generate`.
    Generate,
    /// OpenAI `POST /v1/chat/completions`.
    Chat,
    /// OpenAI `POST /v1/completions`.
    Completions,
    /// SGLang `POST /v1/score` (a prefill only: no output tokens).
    Score,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Generate => "generate",
            RequestKind::Chat => "chat",
            RequestKind::Completions => "completions",
            RequestKind::Score => "score",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            RequestKind::Generate => "/generate",
            RequestKind::Chat => "/v1/chat/completions",
            RequestKind::Completions => "/v1/completions",
            RequestKind::Score => "/v1/score",
        }
    }

    /// Whether the request body names the model (the OpenAI-style routes
    /// refuse a request without one: seed 004's 400).
    pub fn names_model(self) -> bool {
        !matches!(self, RequestKind::Generate)
    }
}

/// How requests are paced, per server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Open loop: this many requests per second, however long they take.
    Rate(f64),
    /// Closed loop: this many requests in flight at all times.
    Concurrency(u32),
}

/// A parsed SPEC.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    pub kind: RequestKind,
    pub pace: Pace,
    /// Prompt length in tokens (one short word per token).
    pub prompt_tokens: u32,
    /// Tokens to generate (`max_tokens`, `ignore_eos`); score ignores it.
    pub output_tokens: u32,
    /// Requests per server before the window opens (not profiled).
    pub warmup: u32,
    /// The model name to send; `None` reads it from the server.
    pub model: Option<String>,
    /// Stop after this many requests per server, even if the window lasts.
    pub max_requests: Option<u64>,
    /// Per request.
    pub timeout: Duration,
    /// The SPEC as written, for the record.
    pub text: String,
}

pub const SPEC_HELP: &str = "\
SPEC is KIND[:KEY=VALUE,...] or @FILE (a file holding the SPEC).
  KIND         generate (SGLang /generate), chat (/v1/chat/completions),
               completions (/v1/completions), score (/v1/score)
  rate=R       R requests per second per server, open loop      (default: rate=10)
  concurrency=N  N requests in flight per server, closed loop   (instead of rate)
  prompt=T     prompt length in tokens                          (default: 128)
  output=T     tokens to generate (score: ignored)              (default: 16)
  warmup=N     requests per server before the window, not profiled; they also
               check the server accepts the requests            (default: 1)
  model=NAME   the model field (default: read from /v1/models, else /get_model_info)
  max=N        at most N requests per server in the window
  timeout=D    per request, e.g. 30s                            (default: 60s)
Example: chat:rate=20,prompt=512,output=64,warmup=4";

impl FromStr for WorkloadSpec {
    type Err = WorkloadError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| WorkloadError::Spec(format!("{text:?}: {why}"));
        let text = text.trim();
        let (kind, options) = text.split_once(':').unwrap_or((text, ""));
        let kind = match kind.trim() {
            "generate" => RequestKind::Generate,
            "chat" => RequestKind::Chat,
            "completions" | "completion" => RequestKind::Completions,
            "score" => RequestKind::Score,
            other => {
                return Err(bad(format!(
                    "unknown kind {other:?}: use generate, chat, completions or score"
                )))
            }
        };
        let mut spec = WorkloadSpec {
            kind,
            pace: Pace::Rate(10.0),
            prompt_tokens: 128,
            output_tokens: 16,
            warmup: 1,
            model: None,
            max_requests: None,
            timeout: Duration::from_secs(60),
            text: text.to_string(),
        };
        let (mut rate, mut concurrency) = (None, None);
        for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let Some((key, value)) = option.split_once('=') else {
                return Err(bad(format!("{option:?} is not KEY=VALUE")));
            };
            let (key, value) = (key.trim(), value.trim());
            let number = |what: &str| -> Result<u64, WorkloadError> {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{what}={value:?} is not a whole number")))
            };
            match key {
                "rate" => {
                    let r: f64 = value
                        .parse()
                        .ok()
                        .filter(|r: &f64| r.is_finite() && *r > 0.0)
                        .ok_or_else(|| bad(format!("rate={value:?} must be a positive number")))?;
                    rate = Some(r);
                }
                "concurrency" => {
                    let n = number("concurrency")?;
                    if n == 0 || n > 4096 {
                        return Err(bad("concurrency must be 1..=4096".into()));
                    }
                    concurrency = Some(n as u32);
                }
                "prompt" => spec.prompt_tokens = clamp_u32(number("prompt")?.max(1)),
                "output" => spec.output_tokens = clamp_u32(number("output")?),
                "warmup" => spec.warmup = clamp_u32(number("warmup")?),
                "max" => spec.max_requests = Some(number("max")?.max(1)),
                "model" if !value.is_empty() => spec.model = Some(value.to_string()),
                "timeout" => {
                    spec.timeout = humantime::parse_duration(value)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| bad(format!("timeout={value:?} is not a duration like 30s")))?
                }
                _ => {
                    return Err(bad(format!(
                        "unknown key {key:?}: use rate, concurrency, prompt, output, warmup, model, max or timeout"
                    )))
                }
            }
        }
        spec.pace = match (rate, concurrency) {
            (Some(_), Some(_)) => return Err(bad("give rate or concurrency, not both".into())),
            (_, Some(n)) => Pace::Concurrency(n),
            (Some(r), None) => Pace::Rate(r),
            (None, None) => spec.pace,
        };
        Ok(spec)
    }
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Display for WorkloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_as_written() {
        let spec: WorkloadSpec = "chat:rate=20,prompt=512,output=64,warmup=4"
            .parse()
            .unwrap();
        assert_eq!(spec.kind, RequestKind::Chat);
        assert_eq!(spec.pace, Pace::Rate(20.0));
        assert_eq!(
            (spec.prompt_tokens, spec.output_tokens, spec.warmup),
            (512, 64, 4)
        );
        let spec: WorkloadSpec = "score:concurrency=2,model=Qwen/Qwen3-0.6B,max=5,timeout=5s"
            .parse()
            .unwrap();
        assert_eq!(spec.pace, Pace::Concurrency(2));
        assert_eq!(spec.model.as_deref(), Some("Qwen/Qwen3-0.6B"));
        assert_eq!(spec.max_requests, Some(5));
        assert_eq!(spec.timeout, Duration::from_secs(5));
        let spec: WorkloadSpec = "generate".parse().unwrap();
        assert_eq!((spec.pace, spec.warmup), (Pace::Rate(10.0), 1));
    }

    #[test]
    fn mistakes_say_what_to_write() {
        for (text, says) in [
            ("chatt", "unknown kind"),
            ("chat:rate=0", "positive"),
            ("chat:rate=1,concurrency=2", "not both"),
            ("chat:prompt", "KEY=VALUE"),
            ("chat:speed=3", "unknown key"),
            ("chat:timeout=soon", "duration"),
        ] {
            let error = text.parse::<WorkloadSpec>().unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
