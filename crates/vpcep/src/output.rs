//! How the CLI prints: aligned tables for people, `--output json` for scripts.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints rows as an aligned table.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A cell: a JSON value at `pointer` as text (`-` when absent; lists joined by commas).
pub fn cell(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".to_owned(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Prints `rows` (JSON objects) as a table of `columns` (header, JSON pointer).
pub fn print_rows(rows: &[Value], columns: &[(&str, &str)]) {
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, p)| cell(r, p)).collect())
        .collect();
    print_table(&header, &cells);
}

/// Prints one object as FIELD / VALUE lines.
pub fn print_object(v: &Value) {
    let Some(map) = v.as_object() else {
        print_json(v);
        return;
    };
    let rows: Vec<Vec<String>> = map
        .keys()
        .map(|k| vec![k.clone(), cell(v, &format!("/{k}"))])
        .collect();
    print_table(&["FIELD", "VALUE"], &rows);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::cell;

    #[test]
    fn cells() {
        let v = json!({"a": "x", "b": 3, "c": ["p", "q"], "d": [], "e": null, "f": ""});
        assert_eq!(cell(&v, "/a"), "x");
        assert_eq!(cell(&v, "/b"), "3");
        assert_eq!(cell(&v, "/c"), "p,q");
        for k in ["/d", "/e", "/f", "/missing"] {
            assert_eq!(cell(&v, k), "-");
        }
    }
}
