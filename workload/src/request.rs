//! One request of each kind: its JSON body, and what its answer says about
//! tokens or why it failed.

use serde_json::{json, Value};

use crate::spec::{RequestKind, WorkloadSpec};

/// The words prompts are made of: common English words, one token each
/// with the usual BPE vocabularies, so `prompt=N` is about N tokens.
const WORDS: [&str; 16] = [
    "the", "time", "people", "way", "day", "man", "thing", "woman", "life", "child", "world",
    "school", "state", "family", "group", "country",
];

/// The score items and label token ids (seed 002's request shape).
const SCORE_ITEMS: [&str; 2] = ["yes", "no"];
const SCORE_LABEL_TOKEN_IDS: [u32; 2] = [9454, 2753];

/// A prompt of `tokens` words; `seed` varies it between requests so no
/// prefix cache turns every request after the first into a cache hit.
pub fn prompt(tokens: u32, seed: u64) -> String {
    let mut text = String::with_capacity(tokens as usize * 7);
    for i in 0..u64::from(tokens) {
        if i > 0 {
            text.push(' ');
        }
        let pick = (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37_79b9)) % WORDS.len() as u64;
        text.push_str(WORDS[pick as usize]);
    }
    text
}

/// The body of request number `seed` of `spec`, naming `model`.
pub fn body(spec: &WorkloadSpec, model: &str, seed: u64) -> Value {
    let text = prompt(spec.prompt_tokens, seed);
    let output = spec.output_tokens;
    match spec.kind {
        RequestKind::Generate => json!({
            "text": text,
            "sampling_params": {"max_new_tokens": output, "temperature": 0, "ignore_eos": true},
        }),
        RequestKind::Chat => json!({
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": output,
            "temperature": 0,
            "ignore_eos": true,
        }),
        RequestKind::Completions => json!({
            "model": model,
            "prompt": text,
            "max_tokens": output,
            "temperature": 0,
            "ignore_eos": true,
        }),
        RequestKind::Score => json!({
            "model": model,
            "query": text,
            "items": SCORE_ITEMS,
            "label_token_ids": SCORE_LABEL_TOKEN_IDS,
        }),
    }
}

/// Prompt and output tokens as the answer reports them (`usage` for the
/// OpenAI routes, `meta_info` for `/generate`), else as asked.
pub fn tokens(spec: &WorkloadSpec, answer: &Value) -> (u64, u64) {
    let field = |value: &Value, key: &str| value.get(key).and_then(Value::as_u64);
    let asked_output = match spec.kind {
        RequestKind::Score => 0,
        _ => u64::from(spec.output_tokens),
    };
    let reported = answer
        .get("usage")
        .or_else(|| answer.get("meta_info"))
        .map(|usage| {
            (
                field(usage, "prompt_tokens"),
                field(usage, "completion_tokens"),
            )
        });
    match reported {
        Some((prompt, output)) => (
            prompt.unwrap_or(u64::from(spec.prompt_tokens)),
            output.unwrap_or(asked_output),
        ),
        None => (u64::from(spec.prompt_tokens), asked_output),
    }
}

/// The server's own words from an error answer: OpenAI's
/// `{"message": ...}` / `{"error": {"message": ...}}`, FastAPI's
/// `{"detail": ...}`, else the text itself; cut to a readable length.
pub fn server_message(body: &str) -> String {
    const LONGEST: usize = 400;
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|value| {
            let error = value.get("error");
            value
                .get("message")
                .or_else(|| error.and_then(|e| e.get("message")))
                .or(error)
                .or_else(|| value.get("detail"))
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        })
        .unwrap_or_else(|| body.trim().to_string());
    let text = if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    };
    match text.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> WorkloadSpec {
        text.parse().unwrap()
    }

    #[test]
    fn prompts_have_the_asked_length_and_vary() {
        assert_eq!(prompt(512, 1).split(' ').count(), 512);
        assert_ne!(prompt(8, 1), prompt(8, 2));
    }

    #[test]
    fn bodies_name_the_model_where_the_route_needs_it() {
        let score = body(&spec("score:prompt=4"), "Qwen/Qwen3-0.6B", 0);
        assert_eq!(score["model"], "Qwen/Qwen3-0.6B");
        assert_eq!(score["label_token_ids"], json!([9454, 2753]));
        let chat = body(&spec("chat:output=7"), "m", 0);
        assert_eq!(chat["max_tokens"], 7);
        let generate = body(&spec("generate:output=3"), "m", 0);
        assert!(generate.get("model").is_none());
        assert_eq!(generate["sampling_params"]["max_new_tokens"], 3);
    }

    #[test]
    fn tokens_come_from_the_answer() {
        let chat = spec("chat:prompt=10,output=5");
        let answer = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 4}});
        assert_eq!(tokens(&chat, &answer), (12, 4));
        let answer = json!({"meta_info": {"prompt_tokens": 9, "completion_tokens": 5}});
        assert_eq!(tokens(&spec("generate"), &answer), (9, 5));
        assert_eq!(
            tokens(&spec("score:prompt=3"), &json!({"scores": []})),
            (3, 0)
        );
    }

    #[test]
    fn the_servers_message_is_kept() {
        let seed_004 = r#"{"object": "error", "message": "[{'type': 'missing', 'loc': ('body', 'model'), 'msg': 'Field required'}]", "type": "Bad Request", "code": 400}"#;
        assert!(
            server_message(seed_004).starts_with("[{'type': 'missing', 'loc': ('body', 'model')")
        );
        assert_eq!(
            server_message(r#"{"error": {"message": "The model `x` does not exist."}}"#),
            "The model `x` does not exist."
        );
        assert_eq!(
            server_message("Internal Server Error"),
            "Internal Server Error"
        );
        assert!(server_message(&"x".repeat(1000)).ends_with("..."));
    }
}
