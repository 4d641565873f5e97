//! `docs/metrics.md` against a live `/metrics` scrape: every documented metric is
//! exported with its documented type and labels, nothing undocumented is, and no label
//! carries a stream id.

use super::root;
use std::collections::{BTreeMap, BTreeSet};

/// A documented metric: its type and label names.
#[derive(Debug, PartialEq)]
pub struct Doc {
    pub kind: String,
    pub labels: BTreeSet<String>,
}

/// The table rows of one section (`## {section}...`) of docs/metrics.md: `| name | type | labels | meaning |`.
pub fn documented(section: &str) -> BTreeMap<String, Doc> {
    let text = std::fs::read_to_string(root().join("docs/metrics.md")).expect("docs/metrics.md");
    let mut out = BTreeMap::new();
    let worker = text.split(&format!("\n## {section}")).nth(1).unwrap_or_else(|| panic!("a {section} section"));
    let worker = worker.split("\n## ").next().unwrap();
    for line in worker.lines().filter(|l| l.starts_with("| `vigil_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        assert!(out.insert(name.clone(), Doc { kind: cells[2].to_string(), labels }).is_none(), "{name} twice");
    }
    out
}

/// The families in a scrape: name → (type, label names seen).
pub fn exported(body: &str) -> BTreeMap<String, Doc> {
    let mut out: BTreeMap<String, Doc> = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.to_string(), Doc { kind: kind.to_string(), labels: BTreeSet::new() });
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| out.get(*f).is_some_and(|d| d.kind == "histogram")))
                .unwrap_or(name);
            let doc = out.get_mut(family).unwrap_or_else(|| panic!("a sample before its TYPE: {line}"));
            for pair in labels.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap();
                assert!(!v.contains("live/"), "a stream id in a label: {line}");
                if k != "le" {
                    doc.labels.insert(k.to_string());
                }
            }
        }
    }
    out
}

/// Both ways: nothing undocumented, nothing missing, types and labels as documented.
pub fn check_both_ways(seen: &BTreeMap<String, Doc>, docs: &BTreeMap<String, Doc>) {
    let undocumented: Vec<&String> = seen.keys().filter(|n| !docs.contains_key(*n)).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/metrics.md: {undocumented:?}");
    let missing: Vec<&String> = docs.keys().filter(|n| !seen.contains_key(*n)).collect();
    assert!(missing.is_empty(), "in docs/metrics.md but not exported: {missing:?}");
    for (name, doc) in docs {
        let got = &seen[name];
        assert_eq!(got.kind, doc.kind, "{name}: type");
        assert!(got.labels.is_subset(&doc.labels), "{name}: labels {:?}, documented {:?}", got.labels, doc.labels);
    }
}

/// The `## Label values` table: (metric, label) → the values documented.
pub fn documented_label_values() -> BTreeMap<(String, String), BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("docs/metrics.md")).expect("docs/metrics.md");
    let table = text.split("\n## Label values").nth(1).expect("a Label values section");
    let table = table.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `vigil_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let values = cells[3].split(',').map(|v| v.trim().trim_matches('`').to_string()).collect();
        let key = (cells[1].trim_matches('`').to_string(), cells[2].trim_matches('`').to_string());
        assert!(out.insert(key.clone(), values).is_none(), "{key:?} twice");
    }
    out
}

/// The values a scrape shows for `metric`'s `label`.
pub fn exported_label_values(body: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let prefix = format!("{metric}{{");
    body.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once('}').map(|(labels, _)| labels.to_string()))
        .flat_map(|labels| {
            labels
                .split("\",")
                .filter_map(|pair| {
                    pair.split_once("=\"").map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect::<Vec<_>>()
        })
        .filter(|(k, _)| k == label)
        .map(|(_, v)| v)
        .collect()
}
