//! `tracing` events from the library go to ROS logging (stdout/stderr and /rosout), under the
//! node's logger name; repeated warnings about bad input are throttled.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use r2r::LogSeverity;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

struct RosLayer {
    logger: String,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RosLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let severity = match *meta.level() {
            Level::ERROR => LogSeverity::Error,
            Level::WARN => LogSeverity::Warn,
            Level::INFO => LogSeverity::Info,
            Level::DEBUG | Level::TRACE => LogSeverity::Debug,
        };
        let mut message = Message::default();
        event.record(&mut message);
        r2r::log(&message.0, &self.logger, meta.file().unwrap_or(""), meta.line().unwrap_or(0), severity);
    }
}

/// Routes `tracing` to ROS logging under `logger`. Debug events are dropped unless RUST_LOG asks.
pub fn init(logger: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::registry().with(RosLayer { logger: logger.to_owned() }.with_filter(filter)).try_init();
}

/// Lets a kind of message through at most once per `period`, counting what it held back.
pub struct Throttle {
    period: Duration,
    last: HashMap<&'static str, (Instant, u64)>,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Self { period, last: HashMap::new() }
    }

    /// `Some(suppressed)` when a message of `kind` may go out now.
    pub fn allow(&mut self, kind: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(kind) {
            Some((at, held)) if now.duration_since(*at) < self.period => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                self.last.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// A note for a throttled message: how many like it were not shown.
pub fn held_note(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} more like this not shown)")
    }
}

/// At most 80 characters of an instruction, for logs.
pub fn preview(text: &str) -> &str {
    text.char_indices().nth(80).map_or(text, |(i, _)| &text[..i])
}
