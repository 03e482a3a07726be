//! Checks on a command's output paths, run before its work: an output must not be one of the
//! command's inputs (a `--csv` pointed at the checkpoint would append to it and exit 0) nor
//! another output, and it must be writable, so that a long run never ends in a failed write.
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An output of a command: the flag that names it and its path.
pub type Output<'a> = (&'static str, &'a Path);

/// Refuses any output that is the same file as an input or as another output, or that cannot
/// be written. An input that is a directory (a dataset) stands for each file directly in it.
pub fn check_outputs(outputs: &[Output<'_>], inputs: &[&Path]) -> Result<()> {
    let input_files: Vec<PathBuf> = inputs.iter().flat_map(|p| files_of(p)).collect();
    for (i, &(flag, out)) in outputs.iter().enumerate() {
        if let Some(input) = input_files.iter().find(|input| same_file(out, input)) {
            return Err(Error::invalid(format!(
                "{flag} {} is the input file {}: it would be overwritten; choose another path",
                out.display(),
                input.display()
            )));
        }
        if let Some((other, _)) = outputs[..i].iter().find(|(_, o)| same_file(out, o)) {
            return Err(Error::invalid(format!(
                "{flag} and {other} are the same file {}: choose two paths",
                out.display()
            )));
        }
        check_writable(flag, out)?;
    }
    Ok(())
}

/// `path` itself, or the files directly in it when it is a directory; nothing when it does not
/// exist (a built-in dataset's name, a classifier not cached yet).
fn files_of(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let entries = std::fs::read_dir(path).into_iter().flatten();
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect()
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        vec![]
    }
}

/// Whether two paths name one file: the same device and inode when both exist (which sees
/// through symbolic and hard links), else the same canonical path.
fn same_file(a: &Path, b: &Path) -> bool {
    match (file_id(a), file_id(b)) {
        (Some(x), Some(y)) => x == y,
        _ => canonical(a) == canonical(b),
    }
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &Path) -> Option<(u64, u64)> {
    None
}

/// The canonical path; for a file not yet written, its canonical directory joined with its name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (parent_dir(path).canonicalize(), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An error unless `path` can be written: not a directory, in an existing directory, and open
/// for writing (an existing file is opened without truncating it; a new one is created and
/// removed again).
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    let refuse = |why: String| Err(Error::file(path, format!("{flag}: {why}")));
    if path.is_dir() {
        return refuse("is a directory; give a file name".into());
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return refuse(format!("the directory {} does not exist", dir.display()));
    }
    let opened = if path.exists() {
        OpenOptions::new().append(true).open(path).map(|_| ())
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|_| std::fs::remove_file(path))
    };
    match opened {
        Ok(()) => Ok(()),
        Err(e) => refuse(format!("cannot be written: {e}")),
    }
}

/// The run directory a checkpoint argument names: the argument itself when it is a directory,
/// else the directory of the file (`.` for a bare file name).
pub fn run_dir_of(checkpoint: &Path) -> PathBuf {
    if checkpoint.is_dir() {
        return checkpoint.to_path_buf();
    }
    match checkpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dml-paths-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_however_it_is_spelled() {
        let dir = temp("same");
        let input = dir.join("checkpoint.safetensors");
        std::fs::write(&input, b"weights").unwrap();
        let spelled = dir.join(".").join("checkpoint.safetensors");
        let err = check_outputs(&[("--csv", &spelled)], &[&input]).unwrap_err();
        assert!(err.to_string().contains("--csv"), "{err}");
        // A file inside an input directory counts as an input.
        let err = check_outputs(&[("--out", &input)], &[&dir]).unwrap_err();
        assert!(err.to_string().contains("input file"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), b"weights");
        check_outputs(&[("--out", &dir.join("new.png"))], &[&input]).unwrap();
        assert!(
            !dir.join("new.png").exists(),
            "the check leaves no file behind"
        );
    }

    #[test]
    fn two_outputs_in_one_file_and_unwritable_paths_are_refused() {
        let dir = temp("outputs");
        let png = dir.join("a.png");
        let err = check_outputs(&[("--out", &png), ("--tensors", &png)], &[]).unwrap_err();
        assert!(err.to_string().contains("--tensors and --out"), "{err}");
        let err = check_outputs(&[("--out", &dir)], &[]).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let nowhere = dir.join("missing").join("a.png");
        let err = check_outputs(&[("--out", &nowhere)], &[]).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
