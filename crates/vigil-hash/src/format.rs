//! Hash-bank file formats, as hash-sharing tools write them (one row per line):
//!
//! | form | example | from |
//! |---|---|---|
//! | bare hash, optional `hash=` prefix, anything after a comma kept as label | `f8f8…9b22,100,file1.jpg` | ThreatExchange's C++ tools, `tx match --hashes` |
//! | `TYPE HASH` | `pdq f8f8…9b22` | python-threatexchange's file exchange |
//! | headerless CSV, hash first | `35f1…1407,99244958314735,0000,2021-05-07T18:07:52+0000,tags` | HMA 1.0 `.te` exports |
//! | headerless CSV, id first | `case-17,f8f8…9b22,label` | Vigil's own CSV |
//! | CSV with a header naming the hash column (`td_raw_indicator`, `indicator`, `hash`, `pdq`, `signal_str`) and optionally `id`, `signal_type`, labels (`tags`, `labels`, `label`, `td_subjective_tags`, `category`) | `signal_type,signal_str,collab,category,tags` | `tx dataset --csv`, ThreatExchange UI downloads |
//!
//! `#` starts a comment; blank lines are skipped; hex may be upper or lower case. Rows
//! of another signal type (say `md5`) are skipped and counted, not errors.

use crate::Hash256;

/// One parsed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: usize,
    pub id: String,
    pub hash: Hash256,
    pub label: String,
}

/// What a bank file held.
#[derive(Debug, Default)]
pub struct Parsed {
    pub rows: Vec<Row>,
    /// (line, reason) of rows that could not be read.
    pub bad: Vec<(usize, String)>,
    /// Rows of other signal types, skipped.
    pub other_types: usize,
}

const HASH_COLUMNS: [&str; 5] = ["td_raw_indicator", "indicator", "hash", "pdq", "signal_str"];
const ID_COLUMNS: [&str; 4] = ["id", "indicator_id", "td_id", "descriptor_id"];
const LABEL_COLUMNS: [&str; 5] = ["tags", "labels", "label", "td_subjective_tags", "category"];
const PDQ_TYPES: [&str; 2] = ["pdq", "hash_pdq"];
const MAX_LABEL_CHARS: usize = 200;

struct Header {
    hash: usize,
    id: Option<usize>,
    signal_type: Option<usize>,
    labels: Vec<usize>,
}

fn header(fields: &[&str]) -> Option<Header> {
    let lower: Vec<String> = fields.iter().map(|f| f.trim().to_ascii_lowercase()).collect();
    let find = |names: &[&str]| names.iter().find_map(|n| lower.iter().position(|f| f == n));
    let hash = find(&HASH_COLUMNS)?;
    Some(Header {
        hash,
        id: find(&ID_COLUMNS),
        signal_type: lower.iter().position(|f| f == "signal_type" || f == "type"),
        labels: LABEL_COLUMNS.iter().filter_map(|n| lower.iter().position(|f| f == n)).collect(),
    })
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_LABEL_CHARS).collect()
}

pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut head: Option<Header> = None;
    let mut first_row = true;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.split('#').next().unwrap_or("").trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if first_row {
            first_row = false;
            if let Some(h) = header(&fields) {
                head = Some(h);
                continue;
            }
        }
        let parsed = match &head {
            Some(h) => row_by_header(h, &fields, line_no),
            None => row_headerless(line, &fields, line_no),
        };
        match parsed {
            Ok(Some(row)) => out.rows.push(row),
            Ok(None) => out.other_types += 1,
            Err(reason) => out.bad.push((line_no, reason)),
        }
    }
    out
}

fn hash_field(s: &str) -> Result<Hash256, String> {
    let s = s.strip_prefix("hash=").unwrap_or(s);
    s.parse::<Hash256>().map_err(|e| format!("\"{}\": {e}", clip(s)))
}

fn row_by_header(h: &Header, fields: &[&str], line: usize) -> Result<Option<Row>, String> {
    if let Some(t) = h.signal_type.and_then(|i| fields.get(i))
        && !PDQ_TYPES.contains(&t.to_ascii_lowercase().as_str())
    {
        return Ok(None);
    }
    let hash = hash_field(fields.get(h.hash).ok_or("row has fewer columns than the header")?)?;
    let id = h.id.and_then(|i| fields.get(i)).filter(|s| !s.is_empty()).map_or(line.to_string(), |s| clip(s));
    let label = h.labels.iter().filter_map(|i| fields.get(*i)).copied().filter(|s| !s.is_empty()).collect::<Vec<_>>();
    Ok(Some(Row { line, id, hash, label: clip(&label.join(" ")) }))
}

fn row_headerless(line: &str, fields: &[&str], line_no: usize) -> Result<Option<Row>, String> {
    // `TYPE HASH` (python-threatexchange file exchange).
    if let Some((kind, rest)) = line.split_once(char::is_whitespace)
        && !kind.contains(',')
        && !is_hash(kind.strip_prefix("hash=").unwrap_or(kind))
    {
        if !PDQ_TYPES.contains(&kind.to_ascii_lowercase().as_str()) {
            return Ok(None);
        }
        let hash = hash_field(rest.trim().split(|c: char| c == ',' || c.is_whitespace()).next().unwrap_or(""))?;
        return Ok(Some(Row { line: line_no, id: line_no.to_string(), hash, label: String::new() }));
    }
    let first = fields[0].strip_prefix("hash=").unwrap_or(fields[0]);
    if is_hash(first) || fields.len() == 1 {
        // Hash first: the rest of the row is metadata kept as the label.
        let hash = hash_field(fields[0])?;
        let label = line.split_once(',').map(|(_, rest)| clip(rest.trim())).unwrap_or_default();
        return Ok(Some(Row { line: line_no, id: line_no.to_string(), hash, label }));
    }
    // Id first, then the hash, then labels.
    let hash = hash_field(fields[1])?;
    Ok(Some(Row { line: line_no, id: clip(fields[0]), hash, label: clip(&fields[2..].join(" ")) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

    fn one(text: &str) -> Row {
        let p = parse(text);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.rows.len(), 1, "{text}");
        p.rows.into_iter().next().unwrap()
    }

    #[test]
    fn bare_hash_and_cpp_tool_rows() {
        assert_eq!(one(H).id, "1");
        assert_eq!(one(&H.to_uppercase()).hash, H.parse().unwrap());
        let r = one(&format!("hash={H},norm=128,quality=100,filename=a.jpg"));
        assert_eq!(r.label, "norm=128,quality=100,filename=a.jpg");
        assert_eq!(one(&format!("{H},100,file1.jpg")).label, "100,file1.jpg");
    }

    #[test]
    fn threatexchange_file_exchange_rows() {
        assert_eq!(one(&format!("pdq {H}")).hash, H.parse().unwrap());
        assert_eq!(one(&format!("HASH_PDQ {H}")).hash, H.parse().unwrap());
        let p = parse(&format!("md5 d41d8cd98f00b204e9800998ecf8427e\npdq {H}\n"));
        assert_eq!((p.rows.len(), p.other_types), (1, 1));
    }

    #[test]
    fn hma_te_rows_keep_metadata() {
        let r = one(&format!("{H},99244958314735,00000000000000,2021-05-07T18:07:52+0000,a b"));
        assert!(r.label.starts_with("99244958314735"));
    }

    #[test]
    fn id_first_csv_with_and_without_header() {
        let r = one(&format!("case-17,{H},label one"));
        assert_eq!((r.id.as_str(), r.label.as_str()), ("case-17", "label one"));
        let p = parse(&format!("id,hash,label\nx1,{H},bridge\n"));
        assert_eq!(p.rows[0].id, "x1");
        assert_eq!(p.rows[0].label, "bridge");
    }

    #[test]
    fn headers_from_sharing_tools() {
        let p = parse(&format!("signal_type,signal_str,collab,category,tags\npdq,{H},c,cat,t1 t2\nmd5,abc,c,cat,\n"));
        assert_eq!((p.rows.len(), p.other_types), (1, 1));
        assert_eq!(p.rows[0].label, "t1 t2 cat");
        let p = parse(&format!("td_raw_indicator,td_subjective_tags,td_owner_id\n{H},testing;pwny,42\n"));
        assert_eq!(p.rows[0].label, "testing;pwny");
        assert_eq!(p.rows[0].id, "2");
    }

    #[test]
    fn bad_rows_are_reported_with_line_numbers_and_the_rest_loads() {
        let p = parse(&format!("{H}\nnot-a-hash\n\n# note\nzz{}\n{H}\n", &H[2..]));
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![2, 5]);
        assert!(p.bad[0].1.contains("64 hex digits"), "{:?}", p.bad);
    }
}
