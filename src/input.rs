//! Reading user input files: regular files only (a FIFO or a device is refused with an error
//! naming it, instead of blocking or filling memory), errors naming the file.

use std::fs::File;
use std::path::Path;

use repflow_engine::files::{open_input, read_input};

use crate::error::UserError;

fn cannot(path: &Path, e: std::io::Error) -> UserError {
    UserError::input(format!("cannot read `{}`: {e}", path.display()))
}

/// Opens the input file at `path` (a regular file, symlinks followed).
pub fn open(path: &Path) -> Result<File, UserError> {
    open_input(path).map_err(|e| cannot(path, e))
}

/// The bytes of the input file at `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, UserError> {
    read_input(path).map_err(|e| cannot(path, e))
}

/// The text of the input file at `path` (UTF-8).
pub fn read_to_string(path: &Path) -> Result<String, UserError> {
    String::from_utf8(read(path)?)
        .map_err(|e| UserError::input(format!("`{}` is not UTF-8 text: {e}", path.display())))
}
