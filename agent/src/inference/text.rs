//! A reader of the Prometheus text exposition format (version 0.0.4), as the inference
//! servers write it: only the samples (`name{label="value",…} value [timestamp]`);
//! `# HELP` / `# TYPE` lines and timestamps are skipped. A line that is not a sample is
//! an error naming its line number: a scrape that returns garbage is a failed scrape,
//! never zero counts.
//!
//! Written here rather than taken from a crate: `prometheus-parse` (the one small
//! reader on crates.io) pulls in `chrono`, `regex` and `once_cell` to build typed
//! metric families that this reader has no use for; the agent needs only the samples.

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The most samples read from one answer; past it the answer is refused (memory stays
/// bounded whatever a server sends).
pub const MAX_SAMPLES: usize = 100_000;

/// Reads every sample of `text`, or says which line is not one.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if out.len() >= MAX_SAMPLES {
            return Err(format!("more than {MAX_SAMPLES} samples"));
        }
        let sample = parse_line(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(sample);
    }
    Ok(out)
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if end == 0 {
        return Err("no metric name".into());
    }
    let name = line[..end].to_string();
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("{name} has no value"))?;
    let value = parse_value(value)
        .ok_or_else(|| format!("{name} has the value {value:?}, not a number"))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("{name} has the timestamp {ts:?}, not an integer"))?;
    }
    if fields.next().is_some() {
        return Err(format!("{name} has text after its value"));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse::<f64>().ok().filter(|x| x.is_finite()),
    }
}

/// Reads `k="v",…}` and returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let end = s
            .char_indices()
            .find(|&(i, c)| !is_name_char(c, i == 0) || c == ':')
            .map_or(s.len(), |(i, _)| i);
        if end == 0 {
            return Err("a label has no name".into());
        }
        let key = s[..end].to_string();
        s = s[end..].trim_start();
        s = s
            .strip_prefix('=')
            .and_then(|r| r.trim_start().strip_prefix('"'))
            .ok_or_else(|| format!("label {key} has no quoted value"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("label {key}'s value is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("label {key}'s value is not closed")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        out.push((key, value));
        s = s[close + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("labels are not separated by commas".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_escapes_and_special_values_are_read() {
        let text = "# HELP x_total A counter.\n# TYPE x_total counter\n\
            x_total 3\n\
            vllm:prompt_tokens_total{engine=\"0\",model_name=\"a \\\"b\\\" \\\\ c\"} 1.2e+03\n\
            h_bucket{le=\"+Inf\",} 7 1700000000000\n\
            g NaN\n";
        let s = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].name.as_str(), s[0].value), ("x_total", 3.0));
        assert_eq!(s[1].label("model_name"), Some("a \"b\" \\ c"));
        assert_eq!(s[1].value, 1200.0);
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        for (text, needle) in [
            ("ok 1\n{a=\"b\"} 2\n", "line 2: no metric name"),
            ("x{a=\"b} 1\n", "not closed"),
            ("x{a=b} 1\n", "no quoted value"),
            ("x 1 2 3\n", "text after"),
            ("x one\n", "not a number"),
            ("x\n", "no value"),
            ("<html>\n", "no metric name"),
        ] {
            let e = parse(text).err().unwrap_or_default();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
