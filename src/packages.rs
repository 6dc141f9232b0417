//! Files inside registry packages, read without installing them: a Debian `.deb` is an `ar`
//! archive whose `data.tar.xz` holds the installed tree.

use std::io::Read;
use std::path::Path;

use crate::error::UserError;

fn bad(path: &Path, why: impl std::fmt::Display) -> UserError {
    UserError::input(format!("`{}`: {why}", path.display()))
}

/// The files of the `.deb` at `path` whose installed path ends with one of `suffixes`, in
/// `suffixes` order (`None` where absent). `fetch` says how to get the package, for errors.
pub fn deb_files(
    path: &Path,
    suffixes: &[&str],
    fetch: &str,
) -> Result<Vec<Option<Vec<u8>>>, UserError> {
    let deb = repflow_engine::files::open_input(path)
        .map_err(|e| bad(path, e).hint(fetch.to_string()))?;
    let mut archive = ar::Archive::new(deb);
    let mut data_tar = None;
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.map_err(|e| bad(path, format!("not a .deb (ar) archive: {e}")))?;
        if entry.header().identifier() == b"data.tar.xz" {
            let mut xz = Vec::new();
            entry.read_to_end(&mut xz).map_err(|e| bad(path, e))?;
            let mut tar_bytes = Vec::new();
            lzma_rs::xz_decompress(&mut xz.as_slice(), &mut tar_bytes)
                .map_err(|e| bad(path, format!("data.tar.xz: {e:?}")))?;
            data_tar = Some(tar_bytes);
        }
    }
    let tar_bytes = data_tar.ok_or_else(|| bad(path, "the .deb holds no data.tar.xz"))?;
    let mut found = vec![None; suffixes.len()];
    let mut tar = tar::Archive::new(tar_bytes.as_slice());
    for entry in tar.entries().map_err(|e| bad(path, e))? {
        let mut entry = entry.map_err(|e| bad(path, e))?;
        let name = entry
            .path()
            .map_err(|e| bad(path, e))?
            .to_string_lossy()
            .into_owned();
        if let Some(i) = suffixes.iter().position(|s| name.ends_with(s)) {
            let mut b = Vec::new();
            entry.read_to_end(&mut b).map_err(|e| bad(path, e))?;
            found[i] = Some(b);
        }
    }
    Ok(found)
}
