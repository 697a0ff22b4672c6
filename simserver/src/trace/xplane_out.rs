//! The simulated server's events into the shared streaming XSpace encoder
//! (`rankline_xplane::encode`): its [`EventSink`] for one line.

use rankline_xplane::encode::{self, LineEncoder};

use super::{EventSink, Stat, StatValue};

impl EventSink for LineEncoder<'_> {
    fn event(&mut self, name: &str, start_ns: i64, end_ns: i64, stats: &[Stat<'_>]) {
        let stats = stats.iter().map(|&(key, value)| {
            let value = match value {
                StatValue::Int(v) => encode::StatValue::Int(v),
                StatValue::Ref(s) => encode::StatValue::Ref(s),
            };
            (key, value)
        });
        LineEncoder::event(self, name, start_ns, end_ns, stats);
    }
}
