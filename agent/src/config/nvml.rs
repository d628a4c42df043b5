//! `[nvml]`: NVIDIA GPUs through NVML.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Default NVML library, as the NVIDIA driver installs it.
pub const DEFAULT_NVML_LIBRARY: &str = "libnvidia-ml.so.1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmlConfig {
    /// Path or name of `libnvidia-ml.so`, or `"off"`.
    pub library: NvmlLibrary,
}

impl Default for NvmlConfig {
    fn default() -> Self {
        NvmlConfig {
            library: NvmlLibrary::Path(PathBuf::from(DEFAULT_NVML_LIBRARY)),
        }
    }
}

/// Where to load NVML from, or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvmlLibrary {
    Off,
    Path(PathBuf),
}

impl FromStr for NvmlLibrary {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("expected a path to libnvidia-ml.so, or \"off\"; got an empty string".into()),
            "off" => Ok(NvmlLibrary::Off),
            path => Ok(NvmlLibrary::Path(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for NvmlLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NvmlLibrary::Off => f.write_str("off"),
            NvmlLibrary::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for NvmlLibrary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NvmlLibrary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_library_parsing() {
        assert_eq!("off".parse::<NvmlLibrary>(), Ok(NvmlLibrary::Off));
        assert_eq!(
            "/x/lib.so".parse::<NvmlLibrary>(),
            Ok(NvmlLibrary::Path("/x/lib.so".into()))
        );
        assert!("".parse::<NvmlLibrary>().is_err());
    }
}
