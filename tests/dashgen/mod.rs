//! The Grafana dashboards' generator: each `dashboards/src/NAME.json` is a compact
//! description of one dashboard whose every text is a key `@{key}` of
//! `dashboards/src/i18n.json`; it is rendered as Grafana's JSON model once per language
//! into `dashboards/grafana/LANG/NAME.json`. The French and English dashboards are thus
//! one source: `tests/dashboards.rs` fails when a committed file differs from what this
//! renders (`UPDATE_EXPECT=1 cargo test --test dashboards` rewrites them).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

pub const LANGS: [&str; 2] = ["en", "fr"];
pub const DASHBOARDS: [&str; 3] = ["fleet", "footprint", "inference"];

pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The translation table: key → language → text.
pub fn table() -> BTreeMap<String, BTreeMap<String, String>> {
    serde_json::from_value(load(&dashboards_dir().join("src/i18n.json"))).unwrap()
}

pub fn spec(name: &str) -> Value {
    load(&dashboards_dir().join(format!("src/{name}.json")))
}

/// Replaces every `@{key}` in the strings of `v` by its `lang` text; records the keys.
fn translate(
    v: &Value,
    lang: &str,
    table: &BTreeMap<String, BTreeMap<String, String>>,
    used: &mut BTreeSet<String>,
) -> Value {
    match v {
        Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("@{") {
                out.push_str(&rest[..i]);
                let end = rest[i..]
                    .find('}')
                    .unwrap_or_else(|| panic!("unclosed @{{ in {s:?}"));
                let key = &rest[i + 2..i + end];
                let text = table
                    .get(key)
                    .and_then(|t| t.get(lang))
                    .unwrap_or_else(|| panic!("no {lang} text for @{{{key}}}"));
                used.insert(key.to_string());
                out.push_str(text);
                rest = &rest[i + end + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => {
            Value::Array(a.iter().map(|x| translate(x, lang, table, used)).collect())
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), translate(x, lang, table, used)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn ds() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn thresholds(steps: Option<&Value>) -> Value {
    let mut out = vec![json!({"color": "green", "value": null})];
    let colors = ["orange", "red"];
    for (i, t) in steps
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        out.push(json!({"color": colors[i.min(1)], "value": t}));
    }
    json!({"mode": "absolute", "steps": out})
}

/// One panel of Grafana's model from its compact description.
fn panel(p: &Value, id: u64, grid: Value) -> Value {
    let kind = str_of(p, "type").expect("panel type");
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    out.insert("type".into(), json!(kind));
    out.insert("title".into(), json!(str_of(p, "title").expect("title")));
    if let Some(d) = str_of(p, "description") {
        out.insert("description".into(), json!(d));
    }
    out.insert("gridPos".into(), grid);
    if kind == "text" {
        out.insert(
            "options".into(),
            json!({"mode": "markdown", "content": str_of(p, "content").expect("content")}),
        );
        return Value::Object(out);
    }
    out.insert("datasource".into(), ds());
    let instant = kind != "timeseries";
    let mut defaults = Map::new();
    if let Some(u) = str_of(p, "unit") {
        defaults.insert("unit".into(), json!(u));
    }
    if let Some(d) = p.get("decimals") {
        defaults.insert("decimals".into(), d.clone());
    }
    if let Some(m) = p.get("max") {
        defaults.insert("min".into(), json!(0));
        defaults.insert("max".into(), m.clone());
    }
    defaults.insert("thresholds".into(), thresholds(p.get("thresholds")));
    if kind == "timeseries" {
        let stacked = p.get("stack").and_then(Value::as_bool).unwrap_or(false);
        let bars = p.get("bars").and_then(Value::as_bool).unwrap_or(false);
        defaults.insert(
            "custom".into(),
            json!({
                "drawStyle": if bars { "bars" } else { "line" },
                "fillOpacity": if stacked { 30 } else { 10 },
                "stacking": {"mode": if stacked { "normal" } else { "none" }, "group": "A"},
                "showPoints": "never",
            }),
        );
    }
    out.insert(
        "fieldConfig".into(),
        json!({"defaults": Value::Object(defaults), "overrides": []}),
    );
    let options = match kind {
        "stat" => json!({
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
            "colorMode": "value", "graphMode": "none", "textMode": "auto"
        }),
        "bargauge" => json!({
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
            "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": true
        }),
        "piechart" => json!({
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
            "pieType": "donut", "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]}
        }),
        "table" => json!({"showHeader": true, "cellHeight": "sm"}),
        _ => {
            json!({"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi", "sort": "desc"}})
        }
    };
    out.insert("options".into(), options);
    let targets: Vec<Value> = p["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut target = Map::new();
            target.insert(
                "refId".into(),
                json!(((b'A' + i as u8) as char).to_string()),
            );
            target.insert("datasource".into(), ds());
            target.insert("expr".into(), json!(str_of(t, "expr").expect("expr")));
            target.insert(
                "legendFormat".into(),
                json!(str_of(t, "legend").unwrap_or("__auto")),
            );
            target.insert("instant".into(), json!(instant));
            target.insert("range".into(), json!(!instant));
            target.insert(
                "format".into(),
                json!(str_of(t, "format").unwrap_or("time_series")),
            );
            if let Some(i) = str_of(t, "interval") {
                target.insert("interval".into(), json!(i));
            }
            Value::Object(target)
        })
        .collect();
    if kind == "table" && targets.len() > 1 {
        // One row per series, one column per query, named by its legend.
        let names: Map<String, Value> = targets
            .iter()
            .map(|t| {
                (
                    format!("Value #{}", t["refId"].as_str().unwrap()),
                    t["legendFormat"].clone(),
                )
            })
            .collect();
        out.insert(
            "transformations".into(),
            json!([
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {"excludeByName": {"Time": true}, "renameByName": names}}
            ]),
        );
    }
    out.insert("targets".into(), Value::Array(targets));
    Value::Object(out)
}

/// The Grafana JSON model of dashboard `name` in `lang`, and the translation keys used.
pub fn render(name: &str, lang: &str) -> (Value, BTreeSet<String>) {
    let mut used = BTreeSet::new();
    let s = translate(&spec(name), lang, &table(), &mut used);
    let mut variables = vec![json!({
        "name": "datasource", "label": "Prometheus", "type": "datasource",
        "query": "prometheus", "current": {}, "hide": 0
    })];
    for v in s["variables"].as_array().into_iter().flatten() {
        let q = str_of(v, "query").expect("variable query");
        variables.push(json!({
            "name": str_of(v, "name").expect("variable name"),
            "label": str_of(v, "label").expect("variable label"),
            "type": "query",
            "datasource": ds(),
            "definition": q,
            "query": {"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,
            "includeAll": true,
            "multi": true,
            "allValue": ".*",
            "current": {"selected": true, "text": ["All"], "value": ["$__all"]},
            "sort": 1
        }));
    }
    let (mut x, mut y, mut line_h) = (0u64, 0u64, 0u64);
    let mut panels = Vec::new();
    for (i, p) in s["panels"].as_array().expect("panels").iter().enumerate() {
        let id = i as u64 + 1;
        if let Some(title) = str_of(p, "row") {
            y += line_h;
            (x, line_h) = (0, 0);
            panels.push(json!({
                "id": id, "type": "row", "title": title, "collapsed": false,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []
            }));
            y += 1;
            continue;
        }
        let w = p.get("w").and_then(Value::as_u64).unwrap_or(12);
        let h = p.get("h").and_then(Value::as_u64).unwrap_or(8);
        if x + w > 24 {
            y += line_h;
            (x, line_h) = (0, 0);
        }
        panels.push(panel(p, id, json!({"h": h, "w": w, "x": x, "y": y})));
        x += w;
        line_h = line_h.max(h);
    }
    let time = str_of(&s, "time").expect("time");
    let dashboard = json!({
        "uid": format!("{}-{lang}", str_of(&s, "uid").expect("uid")),
        "title": str_of(&s, "title").expect("title"),
        "description": str_of(&s, "description").unwrap_or_default(),
        "tags": ["empreinte", lang],
        "timezone": "browser",
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": time, "to": "now"},
        "links": [{
            "type": "dashboards", "tags": ["empreinte", lang], "asDropdown": true,
            "title": "Empreinte", "includeVars": true, "keepTime": true
        }],
        "templating": {"list": variables},
        "panels": panels
    });
    (dashboard, used)
}

/// Every generated file: its path under `dashboards/` and its text.
pub fn render_all() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for lang in LANGS {
        for name in DASHBOARDS {
            let (d, _) = render(name, lang);
            let mut text = serde_json::to_string_pretty(&d).unwrap();
            text.push('\n');
            out.push((PathBuf::from(format!("grafana/{lang}/{name}.json")), text));
        }
    }
    out
}

/// A query of a committed dashboard: a panel's target or a variable's query.
#[derive(Clone, Debug)]
pub struct Query {
    pub file: String,
    pub panel: String,
    pub expr: String,
    pub instant: bool,
}

/// Every query of every committed dashboard, in every language.
pub fn committed_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for lang in LANGS {
        for name in DASHBOARDS {
            let file = format!("grafana/{lang}/{name}.json");
            let d = load(&dashboards_dir().join(&file));
            for v in d["templating"]["list"].as_array().unwrap() {
                if let Some(q) = v["query"].get("query").and_then(Value::as_str) {
                    out.push(Query {
                        file: file.clone(),
                        panel: format!("variable {}", v["name"]),
                        expr: q.to_string(),
                        instant: true,
                    });
                }
            }
            for p in d["panels"].as_array().unwrap() {
                for t in p["targets"].as_array().into_iter().flatten() {
                    out.push(Query {
                        file: file.clone(),
                        panel: p["title"].as_str().unwrap().to_string(),
                        expr: t["expr"].as_str().unwrap().to_string(),
                        instant: t["instant"].as_bool().unwrap(),
                    });
                }
            }
        }
    }
    out
}

/// The targets of the source descriptions tagged `"check": NAME`: expressions whose
/// numbers the end-to-end test compares with what the agents measured.
pub fn checked_exprs() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in DASHBOARDS {
        for p in spec(name)["panels"].as_array().unwrap() {
            for t in p
                .get("targets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(c) = str_of(t, "check") {
                    out.insert(c.to_string(), str_of(t, "expr").unwrap().to_string());
                }
            }
        }
    }
    out
}

/// The metric names an expression reads: identifiers that start with `empreinte_` or
/// hold a colon (recording rules, vLLM's `vllm:` metrics), plus `up`; label values in
/// quotes and `by (...)` lists are skipped.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    let bytes = expr.as_bytes();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            for (_, d) in chars.by_ref() {
                if d == '"' {
                    break;
                }
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let mut end = i + 1;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            let word = &expr[i..end];
            while chars.peek().is_some_and(|(j, _)| *j < end) {
                chars.next();
            }
            if word.starts_with("empreinte_") || word.contains(':') || word == "up" {
                out.insert(word.to_string());
            }
        }
    }
    out
}

/// The rules of deploy/prometheus/rules.yml: the recorded series or alert's name, and
/// its expression (one line, or a `|` block).
pub fn rules() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut name = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some(n) = l
            .strip_prefix("- record: ")
            .or_else(|| l.strip_prefix("- alert: "))
        {
            name = n.trim().to_string();
        } else if let Some(e) = l.strip_prefix("expr: ") {
            let mut expr = e.trim().to_string();
            if expr == "|" {
                let indent = lines[i].find("expr:").unwrap();
                expr.clear();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty()
                        || lines[i + 1].len() - lines[i + 1].trim_start().len() > indent)
                {
                    i += 1;
                    expr.push_str(lines[i].trim());
                    expr.push('\n');
                }
            }
            assert!(!name.is_empty(), "expr before any rule name: {l}");
            out.push((std::mem::take(&mut name), expr.trim().to_string()));
        }
        i += 1;
    }
    out
}
