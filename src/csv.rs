//! The little CSV the engine writes (eval.csv, sweep.csv): fields quoted only when they must be,
//! lines split back into fields, and rows appended so that a process killed at any moment leaves
//! the old file or the new one, never a torn row.
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A CSV field: quoted, with inner quotes doubled, when it holds a comma, quote or line break.
pub fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// The fields of one line written with [`quote`].
pub fn split_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The data lines of the CSV file at `path` (none when it does not exist), after checking that
/// its first line is `header`. A file written before `header` gained trailing columns (its
/// header a prefix of `header`, whole columns) is read with those columns empty, so that the
/// next [`replace`] upgrades it instead of refusing it.
pub fn read_rows(path: &Path, header: &str) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = fs::read_to_string(path).map_err(|e| Error::Io {
        context: format!("reading {}", path.display()),
        source: e,
    })?;
    let mut lines = text.lines();
    match lines.next() {
        None => Ok(vec![]),
        Some(first) if first == header => Ok(lines.map(str::to_string).collect()),
        Some(first)
            if header
                .strip_prefix(first)
                .is_some_and(|rest| rest.starts_with(',')) =>
        {
            let added = header[first.len()..].matches(',').count();
            let padding = ",".repeat(added);
            Ok(lines.map(|l| format!("{l}{padding}")).collect())
        }
        Some(first) => Err(Error::file(
            path,
            format!("its header is '{first}', expected '{header}': not a file this command wrote"),
        )),
    }
}

/// Writes `header` and `rows` to a temporary file beside `path` and renames it over `path`
/// (atomic on one file system).
pub fn replace(path: &Path, header: &str, rows: &[String]) -> Result<()> {
    let temp = temp_path(path);
    let mut text = String::from(header);
    text.push('\n');
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    let io = |what: &str, e| Error::Io {
        context: format!("{what} {}", path.display()),
        source: e,
    };
    fs::write(&temp, text).map_err(|e| io("writing", e))?;
    fs::rename(&temp, path).map_err(|e| io("replacing", e))
}

/// Appends `row` to the CSV file at `path` (created with `header` when missing) by rewriting
/// the whole file atomically ([`replace`]): these files hold tens of rows.
pub fn append_atomically(path: &Path, header: &str, row: &str) -> Result<()> {
    let mut rows = read_rows(path, header)?;
    rows.push(row.to_string());
    replace(path, header, &rows)
}

/// `.NAME.tmp` beside `path`: the same file system, so the rename is atomic.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "file".as_ref()));
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_split_back() {
        let fields = ["plain", "a,b", "say \"hi\"", ""];
        let line: Vec<String> = fields.iter().map(|f| quote(f)).collect();
        assert_eq!(split_line(&line.join(",")), fields);
    }

    #[test]
    fn a_file_from_before_trailing_columns_reads_upgraded_and_others_are_refused() {
        let dir = std::env::temp_dir().join(format!("dml-csv-upgrade-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eval.csv");
        fs::write(&path, "a,b\n1,2\n").unwrap();
        assert_eq!(read_rows(&path, "a,b,c,d").unwrap(), ["1,2,,"]);
        append_atomically(&path, "a,b,c,d", "3,4,5,6").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "a,b,c,d\n1,2,,\n3,4,5,6\n"
        );
        // A prefix that stops inside a column name, or another header, is not an older version.
        fs::write(&path, "a,b\n1,2\n").unwrap();
        assert!(read_rows(&path, "a,bc").is_err());
        assert!(read_rows(&path, "x,b,c").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
