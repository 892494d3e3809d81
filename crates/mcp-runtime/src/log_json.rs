//! The runtime's JSON log format (`--log-format json`): one JSON object per line with the keys
//! of every process of the project (`docs/operations.md`, "Logs"): `ts` (RFC 3339 UTC with
//! milliseconds), `level` (`trace`, `debug`, `info`, `warning`, `error`), `logger` (the
//! event's `tracing` target; the request line's is `mcp_runtime::access`), `msg` (the event's
//! message), then the event's fields at the top level under their own names (`request_id`,
//! `trace_id`, `span_id`, `session_id`, `mode`, `mcp_method`, `http_status`, `rpc_code`,
//! `outcome`, `duration_ms` on the request line). The same keys as the gateway's and the
//! core's JSON lines (`mcp_gateway._logging.JsonFormatter`), so a collector reads the three
//! alike. No span lists: the request line carries its own ids.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The [`FormatEvent`] of `--log-format json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// The `level` value of a `tracing` level (the Python processes' names: `warning`, not
/// `warn`).
#[must_use]
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// `unix_ms` (milliseconds since the Unix epoch) as RFC 3339 UTC with milliseconds
/// (`2026-12-03T08:00:00.123Z`).
#[must_use]
pub fn rfc3339_ms(unix_ms: u128) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (day, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = i128::try_from(day).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// The event's message and fields, in the order recorded.
#[derive(Default)]
struct Fields {
    msg: Option<serde_json::Value>,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.msg = Some(value);
        } else if !matches!(field.name(), "ts" | "level" | "logger" | "msg") {
            self.rest.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let text = |v: &serde_json::Value| serde_json::to_string(v).map_err(|_| fmt::Error);
        write!(
            writer,
            r#"{{"ts":"{}","level":"{}","logger":{},"msg":{}"#,
            rfc3339_ms(now),
            level_name(*meta.level()),
            text(&meta.target().into())?,
            text(&fields.msg.unwrap_or_else(|| "".into()))?,
        )?;
        for (name, value) in &fields.rest {
            write!(writer, ",{}:{}", text(&(*name).into())?, text(value)?)?;
        }
        writeln!(writer, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_796_284_800_999), "2026-12-03T08:00:00.999Z");
        assert_eq!(level_name(Level::WARN), "warning");
    }
}
