//! A results folder written as one unit: every file of a run is written into a staging
//! folder beside it, which then takes the folder's place in one atomic exchange
//! (`renameat2(RENAME_EXCHANGE)`), so a reader, a full disk or a kill sees either all the old
//! files or all the new ones, never a mix. A results set identical to the one in place is
//! not swapped in (a rerun that changes nothing touches nothing). Single files (the table,
//! figures and report written beside or into a set) go through [`write_if_changed`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::UserError;

fn cannot(what: &str, path: &Path, e: std::io::Error) -> UserError {
    UserError::input(format!("cannot {what} `{}`: {e}", path.display()))
}

/// Writes `bytes` to `path` unless it already holds them, atomically (a temporary file named
/// for this process and thread, then a rename), so concurrent runs never clash.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), UserError> {
    if std::fs::read(path).map(|b| b == bytes).unwrap_or(false) {
        return Ok(());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| cannot("write", path, e))
}

/// Writes the results folder `dir` as one unit: `fill` writes every file into the staging
/// folder it is given; then that folder replaces `dir`. On any error the staging folder is
/// removed and `dir` is left as it was.
pub fn replace<T>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<T, UserError>,
) -> Result<T, UserError> {
    // A symlinked results folder is replaced where it points.
    let resolved = std::fs::canonicalize(dir).ok();
    let dir = resolved.as_deref().unwrap_or(dir);
    let name = dir
        .file_name()
        .ok_or_else(|| {
            UserError::input(format!(
                "the results folder `{}` has no name of its own",
                dir.display()
            ))
            .hint("set `results` to a folder such as results/my-run")
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| cannot("create", &parent, e))?;
    remove_stale(&parent, &name);
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(|e| cannot("create", &staging, e))?;
    let out = match fill(&staging) {
        Ok(out) => out,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let swapped = if !dir.exists() {
        std::fs::rename(&staging, dir).map_err(|e| cannot("write", dir, e))
    } else if same_files(&staging, dir) {
        Ok(())
    } else {
        exchange(&staging, dir, &parent, &name)
    };
    let _ = std::fs::remove_dir_all(&staging);
    swapped.map(|_| out)
}

/// Puts `new` in `dir`'s place and `dir`'s old content at `new`, atomically where the
/// filesystem can (Linux `RENAME_EXCHANGE`); elsewhere by two renames through a side name.
fn exchange(new: &Path, dir: &Path, parent: &Path, name: &str) -> Result<(), UserError> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("paths hold no NUL");
    let (a, b) = (c(new), c(dir));
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(cannot("replace", dir, err));
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(dir, &old).map_err(|e| cannot("replace", dir, e))?;
    if let Err(e) = std::fs::rename(new, dir) {
        let _ = std::fs::rename(&old, dir);
        return Err(cannot("replace", dir, e));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Removes staging and side folders of `name` left by processes that no longer run.
fn remove_stale(parent: &Path, name: &str) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let pid = [".staging-", ".old-"].iter().find_map(|sep| {
            file.strip_prefix(&format!(".{name}{sep}"))
                .and_then(|p| p.parse::<i32>().ok())
        });
        if let Some(pid) = pid {
            if pid != std::process::id() as i32 && !repflow_cache::process_alive(pid) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Every file below `dir`, by path relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Whether folders `a` and `b` hold the same files with the same bytes.
fn same_files(a: &Path, b: &Path) -> bool {
    let fa = files(a);
    fa == files(b)
        && fa
            .iter()
            .all(|f| std::fs::read(a.join(f)).ok() == std::fs::read(b.join(f)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> Result<(), UserError> {
        std::fs::write(dir.join("a.txt"), text).unwrap();
        std::fs::create_dir(dir.join("figures")).unwrap();
        std::fs::write(dir.join("figures/b.txt"), text).unwrap();
        Ok(())
    }

    #[test]
    fn a_failed_fill_leaves_the_old_set_and_no_staging_folder() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("res");
        replace(&dir, |s| write(s, "one")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("figures/b.txt")).unwrap(),
            "one"
        );
        let err = replace(&dir, |s| {
            std::fs::write(s.join("a.txt"), "two").unwrap();
            Err::<(), _>(UserError::input("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "one");
        replace(&dir, |s| write(s, "three")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "three");
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["res".to_string()],
            "no staging or side folder is left"
        );
    }

    #[test]
    fn an_identical_set_is_not_swapped_in() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("res");
        replace(&dir, |s| write(s, "same")).unwrap();
        let before = std::fs::metadata(dir.join("a.txt"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        replace(&dir, |s| write(s, "same")).unwrap();
        let after = std::fs::metadata(dir.join("a.txt"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }
}
