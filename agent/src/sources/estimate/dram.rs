//! DRAM power: a model per installed module and per GB ([`DramModel`]), applied to the
//! module layout the EDAC driver shows (`<edac_root>/mcN/dimmM/size`, MiB, readable
//! without root) or, where it shows none, to a layout inferred from `MemTotal`.

use std::fs;
use std::path::Path;

use super::model::DramModel;

const GIB: u64 = 1 << 30;

/// Installed memory as modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimmLayout {
    /// Size of each populated module, in bytes.
    pub modules: Vec<u64>,
    /// Whether the layout was read from EDAC (true) or inferred from `MemTotal`.
    pub from_edac: bool,
}

impl DimmLayout {
    pub fn total_bytes(&self) -> u64 {
        self.modules.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// The populated modules EDAC lists under `edac_root` (`mcN/dimmM/size` in MiB), or
/// `None` when it lists none (no EDAC driver, a virtual machine, an unreadable tree).
pub fn read_edac(edac_root: &Path) -> Option<DimmLayout> {
    let mut modules = Vec::new();
    let mut controllers: Vec<_> = fs::read_dir(edac_root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("mc"))
        .map(|e| e.path())
        .collect();
    controllers.sort();
    for mc in controllers {
        let Ok(entries) = fs::read_dir(&mc) else {
            continue;
        };
        for dimm in entries.filter_map(Result::ok) {
            let name = dimm.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("dimm") || name.starts_with("rank")) {
                continue;
            }
            let Ok(text) = fs::read_to_string(dimm.path().join("size")) else {
                continue;
            };
            if let Ok(mib) = text.trim().parse::<u64>() {
                if mib > 0 {
                    modules.push(mib.saturating_mul(1 << 20));
                }
            }
        }
    }
    (!modules.is_empty()).then_some(DimmLayout {
        modules,
        from_edac: true,
    })
}

/// The layout inferred from `MemTotal`: the largest standard module size that gives at
/// least `min_modules` modules, rounded up to whole modules (`MemTotal` is a little less
/// than what is installed: the kernel and firmware keep some).
pub fn infer_layout(mem_total_bytes: u64, model: &DramModel) -> DimmLayout {
    let mut sizes: Vec<u64> = model
        .module_sizes_gib
        .iter()
        .map(|g| g.saturating_mul(GIB))
        .filter(|s| *s > 0)
        .collect();
    sizes.sort_unstable();
    let smallest = sizes.first().copied().unwrap_or(8 * GIB);
    let size = sizes
        .iter()
        .rev()
        .copied()
        .find(|s| mem_total_bytes / s >= model.min_modules)
        .unwrap_or(smallest);
    let count = mem_total_bytes.div_ceil(size).max(1);
    DimmLayout {
        modules: vec![size; usize::try_from(count).unwrap_or(usize::MAX).min(4096)],
        from_edac: false,
    }
}

/// DRAM power of `layout`, in watts; `watts_per_gb` as configured.
pub fn power_watts(layout: &DimmLayout, model: &DramModel, watts_per_gb: f64) -> f64 {
    let gb = layout.total_bytes() as f64 / 1e9;
    model.watts_per_module * layout.modules.len() as f64 + watts_per_gb * gb
}

#[cfg(test)]
mod tests {
    use super::super::model::EstimateData;
    use super::*;

    fn model() -> DramModel {
        EstimateData::builtin().unwrap().dram
    }

    #[test]
    fn inferred_layouts_are_what_servers_carry() {
        let m = model();
        let l = infer_layout(256 * GIB, &m);
        assert_eq!((l.modules.len(), l.modules[0]), (8, 32 * GIB));
        // MemTotal a little under the installed 256 GiB.
        let l = infer_layout(251 * GIB, &m);
        assert_eq!((l.modules.len(), l.total_bytes()), (8, 256 * GIB));
        let l = infer_layout(2048 * GIB, &m);
        assert_eq!((l.modules.len(), l.modules[0]), (16, 128 * GIB));
        let l = infer_layout(16 * GIB, &m);
        assert_eq!(l.modules.len(), 4);
        assert_eq!(infer_layout(0, &m).modules.len(), 1);
    }

    #[test]
    fn edac_modules_are_read_and_empty_slots_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for (mc, dimm, mib) in [(0, 0, 65536), (0, 1, 0), (1, 0, 65536), (1, 1, 32768)] {
            let d = dir.path().join(format!("mc{mc}/dimm{dimm}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("size"), format!("{mib}\n")).unwrap();
        }
        fs::create_dir_all(dir.path().join("mc0/dimm9")).unwrap(); // no size file
        let l = read_edac(dir.path()).unwrap();
        assert!(l.from_edac);
        assert_eq!(l.modules.len(), 3);
        assert_eq!(l.total_bytes(), 160 * GIB);
        assert!(read_edac(&dir.path().join("absent")).is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(read_edac(empty.path()).is_none());
    }
}
