//! Output: human (aligned tables, raw bodies) or `--json` (one object per
//! line). Bodies are binary-safe: humans get the raw bytes, JSON gets
//! `body` when the bytes are UTF-8 and `body_hex` otherwise.

use std::io::Write;

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde_json::{Map, Value, json};

/// Output mode.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// `--json`.
    pub json: bool,
}

impl Out {
    /// Writes one JSON line (in JSON mode) or the human text.
    pub fn line(&self, human: impl FnOnce() -> String, json: impl FnOnce() -> Value) {
        let mut stdout = std::io::stdout().lock();
        let text = if self.json {
            json().to_string()
        } else {
            human()
        };
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    /// A body alone: raw bytes plus a newline for humans, `{"body": …}`
    /// merged into `fields` for JSON.
    pub fn body(&self, body: &[u8], fields: Value) {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            let mut v = fields;
            put_body(&mut v, "body", body);
            let _ = writeln!(stdout, "{v}");
        } else {
            let _ = stdout.write_all(body);
            let _ = stdout.write_all(b"\n");
        }
        let _ = stdout.flush();
    }

    /// An aligned table for humans; one JSON line per row otherwise.
    pub fn table(&self, headers: &[&str], rows: Vec<Vec<String>>, json_rows: Vec<Value>) {
        if self.json {
            let mut stdout = std::io::stdout().lock();
            for r in json_rows {
                let _ = writeln!(stdout, "{r}");
            }
            let _ = stdout.flush();
            return;
        }
        let mut table = Table::new();
        table
            .load_preset(NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(headers.iter().map(|h| h.to_uppercase()));
        for r in rows {
            table.add_row(r);
        }
        for line in table.to_string().lines() {
            let line = line.strip_prefix(' ').unwrap_or(line);
            println!("{}", line.trim_end());
        }
    }
}

/// Adds `key` (UTF-8 text) or `key_hex` to a JSON object.
pub fn put_body(v: &mut Value, key: &str, body: &[u8]) {
    let map = match v {
        Value::Object(m) => m,
        other => {
            *other = Value::Object(Map::new());
            match other {
                Value::Object(m) => m,
                _ => return,
            }
        }
    };
    match std::str::from_utf8(body) {
        Ok(s) => {
            map.insert(key.to_owned(), json!(s));
        }
        Err(_) => {
            map.insert(format!("{key}_hex"), json!(hex(body)));
        }
    }
}

/// Text for a table cell: UTF-8 as is (control characters escaped),
/// otherwise `0x…`.
pub fn cell(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(s) => s.escape_default().to_string(),
        Err(_) => format!("0x{}", hex(body)),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from Unix milliseconds (UTC).
pub fn timestamp(millis: u64) -> String {
    let secs = millis / 1000;
    let ms = millis % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_709_210_096_123), "2024-02-29T12:34:56.123Z");
    }

    #[test]
    fn bodies_are_text_or_hex() {
        let mut v = json!({"k": 1});
        put_body(&mut v, "body", b"hi");
        assert_eq!(v["body"], "hi");
        let mut v = json!({});
        put_body(&mut v, "body", &[0xff, 0x00]);
        assert_eq!(v["body_hex"], "ff00");
        assert_eq!(cell(&[0xff]), "0xff");
        assert_eq!(cell(b"a\nb"), "a\\nb");
    }
}
