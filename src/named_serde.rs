//! serde for the kernels' named choices (metric, correlation, …) as their names; an
//! unknown name is an error listing the valid ones. Use with `#[serde(with = "crate::named_serde")]`.

use repflow_kernels::Named;
use serde::de::Error;
use serde::{Deserialize, Deserializer, Serializer};

/// Writes the choice's name.
pub fn serialize<T: Named, S: Serializer>(value: &T, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(value.name())
}

/// Reads a choice from its name.
pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(de: D) -> Result<T, D::Error> {
    let name = String::deserialize(de)?;
    T::from_name(&name).ok_or_else(|| {
        D::Error::custom(format!(
            "unknown name `{name}`; expected one of {}",
            T::names().join(", ")
        ))
    })
}
