//! JSON log lines, written without a JSON tree.
//!
//! The lines are those of `tracing_subscriber`'s JSON format with
//! `flatten_event`, `with_current_span` and `with_span_list`:
//!
//! ```json
//! {"timestamp":"…","level":"INFO","message":"response","target":"…",
//!  "span":{"http.status":201,"name":"request"},"spans":[{"request.id":"…","name":"request"}]}
//! ```
//!
//! That format keeps each span's fields as one JSON object in text and, for
//! every field recorded later (a request's status and latency) and every
//! line written inside the span, parses that text back into a tree and
//! writes it out again: a fifth of a publish's instructions went to it.
//! Here a span's fields are kept as the inside of a JSON object
//! (`"a":1,"b":"x"`): a recorded field is appended to it, and a line copies
//! it between braces. (A field recorded twice would appear twice, the
//! later one last, which is the one JSON readers keep; the service records
//! each once.) Records from the `log` crate are written under their own
//! target, with their `log.*` fields, as tracing_subscriber writes them.
//! One difference: a line's `spans` are those of its own span (the
//! explicit parent, if it names one), where tracing_subscriber lists the
//! current span's; the service's lines are written inside the span they
//! name, where the two are the same.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// Span fields as the members of a JSON object, without its braces.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonMembers;

impl<'w> FormatFields<'w> for JsonMembers {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Members { out: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        // A leading comma unless there are no members yet.
        let first = current.fields.is_empty();
        let mut visitor = Members { out: &mut current.fields, first, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// The event format: one JSON object per line.
#[derive(Debug, Default)]
pub struct JsonLines {
    timer: SystemTime,
}

impl<S> FormatEvent<S, JsonMembers> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, JsonMembers>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // Records from the `log` crate carry their target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        self.timer.format_time(&mut w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = Members { out: &mut w, first: false, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_string(&mut w, meta.target())?;
        if let Some(leaf) = ctx.parent_span() {
            // The innermost span, then all of them from the root.
            w.write_str(",\"span\":")?;
            write_span(&mut w, &leaf)?;
            w.write_str(",\"spans\":[")?;
            for (i, span) in leaf.scope().from_root().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write_span(&mut w, &span)?;
            }
            w.write_char(']')?;
        }
        w.write_str("}\n")
    }
}

/// A span as an object: its fields' members, then its name.
fn write_span<S>(w: &mut Writer<'_>, span: &SpanRef<'_, S>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    w.write_char('{')?;
    if let Some(f) = span.extensions().get::<FormattedFields<JsonMembers>>().filter(|f| !f.fields.is_empty()) {
        w.write_str(&f.fields)?;
        w.write_char(',')?;
    }
    w.write_str("\"name\":")?;
    write_string(w, span.name())?;
    w.write_char('}')
}

struct Members<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> Members<'_, W> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = self.write_member(field.name(), value);
    }

    fn write_member(&mut self, name: &str, value: impl FnOnce(&mut W) -> fmt::Result) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.out.write_char(',')?;
        }
        write_string(self.out, name)?;
        self.out.write_char(':')?;
        value(self.out)
    }
}

impl<W: Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_string(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    // As tracing_subscriber writes them: as text (JSON readers lose digits
    // beyond 53 bits).
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |w| write!(w, "\"{value}\""));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |w| write!(w, "\"{value}\""));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes them: no NaN or infinity in JSON.
        self.member(field, |w| if value.is_finite() { write!(w, "{value:?}") } else { w.write_str("null") });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |w| write_string(w, &value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

fn write_string(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given as the inside of a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Only ASCII needs escaping, and no byte of a multi-byte UTF-8
        // character is ASCII: the text is cut at byte positions that are
        // always character boundaries.
        let bytes = s.as_bytes();
        let mut plain = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b >= 0x20 && b != b'"' && b != b'\\' {
                continue;
            }
            self.0.write_str(&s[plain..i])?;
            match b {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                _ => write!(self.0, "\\u{b:04x}")?,
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines of the code below, written by this format and by
    /// tracing_subscriber's JSON format, parsed.
    fn both(code: impl Fn()) -> (Vec<Value>, Vec<Value>) {
        let ours = Lines::default();
        let theirs = Lines::default();
        let (a, b) = (ours.clone(), theirs.clone());
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonMembers)
                    .event_format(JsonLines::default())
                    .with_writer(move || a.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(move || b.clone()),
            );
        tracing::subscriber::with_default(subscriber, code);
        let parse = |l: Lines| {
            let text = String::from_utf8(l.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect::<Vec<_>>()
        };
        (parse(ours), parse(theirs))
    }

    #[test]
    fn lines_are_tracing_subscribers_json_lines() {
        let (ours, theirs) = both(|| {
            tracing::info!("outside any span");
            let outer = tracing::info_span!("request", request.id = "r-1", http.status = tracing::field::Empty);
            let _outer = outer.enter();
            let inner = tracing::info_span!("cosmos.append", feed = "app/ttd/x", n = 3_u64, ok = true);
            inner.in_scope(|| {
                tracing::warn!(
                    charge = 5.5,
                    nan = f64::NAN,
                    neg = -4_i64,
                    big = 1_i128 << 100,
                    "quote \" backslash \\ newline \n tab \t bell \u{7} é"
                );
            });
            outer.record("http.status", 201_u64);
            tracing::info!(parent: &outer, latency_ms = 1.25, debug = ?Some("x"), "response");
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::error!(error = %"no \"good\"", "failed"));
        });
        assert_eq!(ours.len(), 4);
        for (ours, theirs) in ours.iter().zip(&theirs) {
            let strip = |v: &Value| {
                let mut v = v.clone();
                v.as_object_mut().unwrap().remove("timestamp");
                v
            };
            assert_eq!(strip(ours), strip(theirs));
            let ts = ours["timestamp"].as_str().unwrap();
            assert_eq!(ts.len(), theirs["timestamp"].as_str().unwrap().len(), "{ts}");
        }
        assert_eq!(ours[0]["message"], "outside any span");
        assert!(ours[0].get("span").is_none() && ours[0].get("spans").is_none());
        assert_eq!(ours[1]["spans"][1], json!({"feed": "app/ttd/x", "n": 3, "ok": true, "name": "cosmos.append"}));
        assert_eq!(ours[1]["nan"], Value::Null);
        assert_eq!(ours[2]["span"], json!({"request.id": "r-1", "http.status": 201, "name": "request"}));
        assert_eq!(ours[3]["span"], json!({"name": "empty"}));
    }
}
