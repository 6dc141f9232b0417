//! Network weights on disk, as named tensors: `.safetensors`, or PyTorch's `torch.save` files
//! (`.pt`, `.pth`: the zip format of torch ≥ 1.6) holding a state dict, or a dict holding
//! one under `state_dict` or `model`. A `module.` prefix (DataParallel) is stripped and
//! metadata entries (`__…`) are left out.
//!
//! PyTorch files are read by candle's pickle reader, which interprets the pickle without
//! running it: a file that pickles a model object (`torch.save(model)`) holds the model's
//! class, not a state dict, and is refused with a message saying what to save instead.

use std::collections::HashMap;
use std::path::Path;

use candle_core::pickle::PthTensors;
use candle_core::{Device, Tensor};

use crate::error::UserError;

/// The keys under which a `torch.save` dict may hold its state dict, in the order tried.
const STATE_DICT_KEYS: [Option<&str>; 3] = [None, Some("state_dict"), Some("model")];

/// Reads the tensors of checkpoint `path` (by extension: `.safetensors`, `.pt`, `.pth`).
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>, UserError> {
    let shown = path.display();
    // a regular file first (a FIFO or device is refused before anything reads it)
    crate::input::open(path)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tensors: Vec<(String, Tensor)> = match ext {
        "safetensors" => {
            candle_core::safetensors::load_buffer(&crate::input::read(path)?, &Device::Cpu)
                .map_err(|e| {
                    UserError::input(format!(
                        "cannot read checkpoint `{shown}`: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    ))
                })?
                .into_iter()
                .collect()
        }
        "pt" | "pth" => read_torch(path)?,
        other => {
            return Err(UserError::input(format!(
                "checkpoint `{shown}` has extension `{other}`; expected .safetensors, .pt or .pth"
            )))
        }
    };
    Ok(tensors
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .filter(|(k, _)| !k.starts_with("__"))
        .collect())
}

fn read_torch(path: &Path) -> Result<Vec<(String, Tensor)>, UserError> {
    let shown = path.display();
    // a regular file, and the bound on what any tensor in it can claim to hold
    let size = crate::input::open(path)?
        .metadata()
        .map(|m| m.len())
        .map_err(|e| UserError::input(format!("cannot read `{shown}`: {e}")))?;
    let mut last_error = None;
    let mut found = None;
    for key in STATE_DICT_KEYS {
        match PthTensors::new(path, key) {
            Ok(t) if !t.tensor_infos().is_empty() => {
                found = Some(t);
                break;
            }
            Ok(_) => {}
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    let Some(pth) = found else {
        if let Some(e) = last_error.filter(|e| e.contains("zip") || e.contains("archive")) {
            return Err(UserError::input(format!(
                "`{shown}` is not a torch.save zip file ({})",
                e.lines().next().unwrap_or_default()
            ))
            .hint("save it with torch ≥ 1.6 (torch.save(model.state_dict(), PATH)), or as .safetensors"));
        }
        return Err(UserError::input(format!(
            "`{shown}` holds no tensors: no state dict at its top level or under `state_dict` or `model` (a pickle of a model object holds its code, not its weights)"
        ))
        .hint("save the weights: torch.save(model.state_dict(), PATH)"));
    };
    let mut names: Vec<&String> = pth.tensor_infos().keys().collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let info = &pth.tensor_infos()[name];
        let bytes = info.layout.shape().elem_count() as u64 * info.dtype.size_in_bytes() as u64;
        if bytes > size {
            return Err(UserError::input(format!(
                "`{shown}`: tensor `{name}` claims {bytes} bytes, more than the file's {size}"
            ))
            .hint("the file is truncated or corrupt; save it again"));
        }
        let tensor = pth
            .get(name)
            .map_err(|e| {
                UserError::input(format!(
                    "`{shown}`: cannot read tensor `{name}`: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ))
            })?
            .ok_or_else(|| UserError::input(format!("`{shown}`: tensor `{name}` vanished")))?;
        out.push((name.clone(), tensor));
    }
    Ok(out)
}
