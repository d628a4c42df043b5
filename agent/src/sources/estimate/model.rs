//! The estimate's data (`agent/data/estimate.toml`, `agent/data/cpu_models.toml`) and the
//! pure models built from it: the CPU power curve, the CPU table and its fallbacks.

use serde::Deserialize;

use crate::procfs::CpuInfo;

const ESTIMATE_TOML: &str = include_str!("../../../data/estimate.toml");
const CPU_MODELS_TOML: &str = include_str!("../../../data/cpu_models.toml");

/// `[cpu_curve]`: power as a fraction of TDP at published load points.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuCurve {
    pub load: Vec<f64>,
    pub tdp_ratio: Vec<f64>,
    pub source: String,
    pub year: u16,
    pub uncertainty_pct: f64,
    #[serde(default)]
    pub note: Option<String>,
}

impl CpuCurve {
    /// The ratio of TDP at `utilisation` (0 to 1), linear between the load points.
    pub fn ratio_at(&self, utilisation: f64) -> f64 {
        let u = if utilisation.is_finite() {
            utilisation.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let points = self.load.iter().zip(&self.tdp_ratio);
        let mut prev: Option<(f64, f64)> = None;
        for (&x, &y) in points {
            if u <= x {
                return match prev {
                    Some((x0, y0)) if x > x0 => y0 + (y - y0) * (u - x0) / (x - x0),
                    _ => y,
                };
            }
            prev = Some((x, y));
        }
        prev.map_or(0.0, |(_, y)| y)
    }

    /// The same curve with its zero-load point replaced (`estimate.cpu_idle_fraction`).
    pub fn with_idle_ratio(&self, idle: f64) -> CpuCurve {
        let mut c = self.clone();
        if let Some(first) = c.tdp_ratio.first_mut() {
            *first = idle;
        }
        c
    }
}

/// `[cpu_fallback]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuFallback {
    pub max_socket_tdp_watts: f64,
    pub source: String,
    pub year: u16,
}

/// `[[family]]`: CPUs of one generation, for models missing from the table.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub name: String,
    pub patterns: Vec<String>,
    #[serde(default)]
    pub arm_parts: Vec<String>,
}

/// `[dram]`: power per module and per GB.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DramModel {
    pub watts_per_module: f64,
    pub watts_per_gb: f64,
    pub module_sizes_gib: Vec<u64>,
    pub min_modules: u64,
    pub source: String,
    pub year: u16,
    pub uncertainty_pct: f64,
}

/// `agent/data/estimate.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateData {
    pub cpu_curve: CpuCurve,
    pub cpu_fallback: CpuFallback,
    pub family: Vec<Family>,
    pub dram: DramModel,
}

impl EstimateData {
    pub fn builtin() -> Result<EstimateData, String> {
        let d: EstimateData = toml::from_str(ESTIMATE_TOML)
            .map_err(|e| format!("built-in agent/data/estimate.toml is malformed: {e}"))?;
        let c = &d.cpu_curve;
        let ascending = c.load.windows(2).all(|w| w[0] < w[1]);
        if c.load.len() != c.tdp_ratio.len()
            || c.load.len() < 2
            || !ascending
            || c.load.first() != Some(&0.0)
            || c.load.last() != Some(&1.0)
        {
            return Err("agent/data/estimate.toml: cpu_curve needs ascending load points from 0 to 1, one tdp_ratio each".into());
        }
        if d.dram.module_sizes_gib.is_empty() || d.dram.min_modules == 0 {
            return Err(
                "agent/data/estimate.toml: dram needs module sizes and min_modules > 0".into(),
            );
        }
        Ok(d)
    }
}

/// One CPU model of the table (agent/data/cpu_models.toml).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuModel {
    pub model: String,
    pub vendor: String,
    pub tdp_watts: f64,
    pub cores: u32,
    pub threads: u32,
    pub year: u16,
    pub source: String,
    pub url: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// The table of server CPU models.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTable {
    cpu: Vec<CpuModel>,
    sources: std::collections::BTreeMap<String, String>,
}

impl CpuTable {
    pub fn builtin() -> Result<CpuTable, String> {
        let t: CpuTable = toml::from_str(CPU_MODELS_TOML).map_err(|e| {
            format!("built-in CPU table agent/data/cpu_models.toml is malformed: {e}")
        })?;
        if let Some(bad) = t.cpu.iter().find(|m| {
            m.threads == 0
                || m.tdp_watts.is_nan()
                || m.tdp_watts <= 0.0
                || !t.sources.contains_key(&m.source)
        }) {
            return Err(format!(
                "agent/data/cpu_models.toml: {} has no threads, no TDP or an unknown source",
                bad.model
            ));
        }
        Ok(t)
    }

    pub fn models(&self) -> &[CpuModel] {
        &self.cpu
    }

    /// What a row's `source` key stands for.
    pub fn source_text(&self, key: &str) -> Option<&str> {
        self.sources.get(key).map(String::as_str)
    }

    /// The entry whose `model` appears in `name` as a whole word; the longest wins.
    pub fn lookup(&self, name: &str) -> Option<&CpuModel> {
        self.cpu
            .iter()
            .filter(|m| contains_word(name, &m.model))
            .max_by_key(|m| m.model.len())
    }
}

fn contains_word(haystack: &str, needle: &str) -> bool {
    let hay = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = hay[from..].find(&needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before_ok = hay[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let after_ok = hay[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '+');
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

/// Whether `pattern` (`#` a digit, `?` a letter or digit, else literal, case ignored)
/// matches at the start of a word of `text`.
pub fn pattern_matches(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    if p.is_empty() {
        return false;
    }
    (0..t.len()).any(|start| {
        let word_start = start == 0 || !t[start - 1].is_ascii_alphanumeric();
        word_start
            && start + p.len() <= t.len()
            && p.iter().zip(&t[start..]).all(|(pc, tc)| match pc {
                '#' => tc.is_ascii_digit(),
                '?' => tc.is_ascii_alphanumeric(),
                other => other == tc,
            })
    })
}

/// How the CPU's power at full load was found, for `check` and the logs.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuBasis {
    /// The model is in the table.
    Table,
    /// Configured `estimate.cpu_tdp_watts`.
    Configured,
    /// Unknown model of a known family: the family's median TDP per thread.
    Family(String),
    /// Nothing known: the table's median TDP per thread.
    CoreCount,
}

/// The CPU power model in use, with where its figures come from.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuPowerModel {
    /// TDP in watts of what this host sees: per socket × sockets on bare metal, the
    /// threads' share in a virtual machine.
    pub tdp_seen_watts: f64,
    pub curve: CpuCurve,
    pub basis: CpuBasis,
    /// Plain-language origin, for `check` and the logs.
    pub explanation: String,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl CpuPowerModel {
    /// The model for this host's CPU. `cpu_tdp_watts` is the configured TDP per socket;
    /// `idle_ratio` the configured zero-load point of the curve.
    pub fn derive(
        info: &CpuInfo,
        table: &CpuTable,
        data: &EstimateData,
        cpu_tdp_watts: Option<f64>,
        idle_ratio: f64,
    ) -> CpuPowerModel {
        let curve = data.cpu_curve.with_idle_ratio(idle_ratio);
        let name = info.model.as_deref().unwrap_or("");
        let shown = info
            .model
            .clone()
            .or_else(|| info.arm_part.as_ref().map(|p| format!("Arm part {p}")))
            .unwrap_or_else(|| "unknown CPU".to_string());
        let threads = f64::from(info.logical_cpus);
        let sockets = f64::from(info.sockets);
        let known = (!name.is_empty()).then(|| table.lookup(name)).flatten();
        let family = known.is_none().then(|| {
            data.family.iter().find(|f| {
                f.patterns.iter().any(|p| pattern_matches(name, p))
                    || info.arm_part.as_ref().is_some_and(|part| {
                        f.arm_parts.iter().any(|a| a.eq_ignore_ascii_case(part))
                    })
            })
        });
        let ceiling = data.cpu_fallback.max_socket_tdp_watts * sockets;
        let (tdp_seen_watts, basis, explanation) = match (cpu_tdp_watts, known, family.flatten()) {
            (Some(tdp), Some(m), _) => (
                (tdp / f64::from(m.threads) * threads).min(tdp * sockets),
                CpuBasis::Configured,
                format!(
                    "configured TDP {tdp} W per socket of {} threads, {threads} threads seen",
                    m.threads
                ),
            ),
            (Some(tdp), None, _) => (
                tdp * sockets,
                CpuBasis::Configured,
                format!("configured TDP {tdp} W per socket × {sockets} socket(s)"),
            ),
            (None, Some(m), _) => (
                (m.tdp_watts / f64::from(m.threads) * threads).min(m.tdp_watts * sockets),
                CpuBasis::Table,
                format!(
                    "{} {} TDP {} W for {} threads ({}, {}), {threads} threads seen",
                    m.vendor,
                    m.model,
                    m.tdp_watts,
                    m.threads,
                    table.source_text(&m.source).unwrap_or(&m.source),
                    m.year
                ),
            ),
            (None, None, Some(f)) => {
                let members: Vec<&CpuModel> = table
                    .models()
                    .iter()
                    .filter(|m| f.patterns.iter().any(|p| pattern_matches(&m.model, p)))
                    .collect();
                let per_thread = median(
                    members
                        .iter()
                        .map(|m| m.tdp_watts / f64::from(m.threads))
                        .collect(),
                );
                let family_max = members.iter().map(|m| m.tdp_watts).fold(0.0_f64, f64::max);
                let cap = if family_max > 0.0 {
                    family_max * sockets
                } else {
                    ceiling
                };
                let per_thread = per_thread.unwrap_or_else(|| table_median_per_thread(table));
                (
                    (per_thread * threads).min(cap),
                    CpuBasis::Family(f.name.clone()),
                    format!(
                        "\"{shown}\" is not in the CPU table; as its family {}: median {per_thread:.2} W per thread × {threads} threads, at most {cap} W ({} models); set estimate.cpu_tdp_watts for a better figure",
                        f.name,
                        members.len()
                    ),
                )
            }
            (None, None, None) => {
                let per_thread = table_median_per_thread(table);
                (
                    (per_thread * threads).min(ceiling),
                    CpuBasis::CoreCount,
                    format!(
                        "\"{shown}\" is not in the CPU table and of no known family: median server TDP per thread {per_thread:.2} W × {threads} threads, at most {} W per socket ({}); set estimate.cpu_tdp_watts for a better figure",
                        data.cpu_fallback.max_socket_tdp_watts, data.cpu_fallback.source
                    ),
                )
            }
        };
        CpuPowerModel {
            tdp_seen_watts,
            curve,
            basis,
            explanation,
        }
    }

    /// Power at `utilisation` (0 to 1), in watts.
    pub fn power_at(&self, utilisation: f64) -> f64 {
        self.tdp_seen_watts * self.curve.ratio_at(utilisation)
    }
}

fn table_median_per_thread(table: &CpuTable) -> f64 {
    median(
        table
            .models()
            .iter()
            .map(|m| m.tdp_watts / f64::from(m.threads))
            .collect(),
    )
    .unwrap_or(3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> EstimateData {
        EstimateData::builtin().unwrap()
    }

    fn info(model: &str, threads: u32, sockets: u32) -> CpuInfo {
        CpuInfo {
            model: Some(model.into()),
            logical_cpus: threads,
            sockets,
            arm_part: None,
        }
    }

    #[test]
    fn the_curve_passes_through_the_published_points() {
        let c = data().cpu_curve;
        for (u, r) in [(0.0, 0.12), (0.1, 0.295), (0.5, 0.531), (1.0, 1.004)] {
            assert!((c.ratio_at(u) - r).abs() < 1e-12, "{u}");
        }
        assert!((c.ratio_at(0.55) - (0.531 + (0.608 - 0.531) * 0.5)).abs() < 1e-12);
        assert!((c.ratio_at(2.0) - 1.004).abs() < 1e-12);
        assert!((c.ratio_at(f64::NAN) - 0.12).abs() < 1e-12);
        assert!((c.with_idle_ratio(0.2).ratio_at(0.0) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn the_table_matches_whole_words_and_covers_the_issue_models() {
        let t = CpuTable::builtin().unwrap();
        assert!(t.models().len() >= 300, "{}", t.models().len());
        let tdp = |n: &str| t.lookup(n).map(|m| m.tdp_watts);
        assert_eq!(tdp("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"), Some(150.0));
        assert_eq!(
            tdp("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz"),
            Some(205.0)
        );
        assert_eq!(tdp("AMD EPYC 9454 48-Core Processor"), Some(290.0));
        assert_eq!(tdp("Intel(R) Xeon(R) Platinum 8468"), Some(350.0));
        assert_eq!(tdp("AMD EPYC 9965 192-Core Processor"), Some(500.0));
        assert_eq!(tdp("Intel(R) Xeon(R) 6980P"), Some(500.0));
        assert!(t.lookup("AMD EPYC 77420").is_none());
        assert!(
            t.lookup("Intel(R) Xeon(R) Platinum 8480").is_none(),
            "8480 is not 8480+"
        );
        assert!(t.lookup("Intel(R) Xeon(R) Platinum 8480+").is_some());
    }

    #[test]
    fn cpu_table_covers_the_server_generations() {
        let t = CpuTable::builtin().unwrap();
        let d = data();
        for f in &d.family {
            let members = t
                .models()
                .iter()
                .filter(|m| f.patterns.iter().any(|p| pattern_matches(&m.model, p)))
                .count();
            assert!(members >= 1, "no model of family {}", f.name);
        }
        for m in t.models() {
            assert!(
                m.year >= 2010 && m.year <= 2026,
                "{}: year {}",
                m.model,
                m.year
            );
            assert!(
                m.tdp_watts <= d.cpu_fallback.max_socket_tdp_watts,
                "{}",
                m.model
            );
            assert!(m.cores >= 1 && m.threads >= m.cores, "{}", m.model);
            assert!(!m.url.is_empty(), "{}", m.model);
        }
    }

    #[test]
    fn patterns_match_at_word_starts() {
        assert!(pattern_matches("AMD EPYC 9474F 48-Core", "EPYC 9??4"));
        assert!(!pattern_matches("AMD EPYC 9475F", "EPYC 9??4"));
        assert!(pattern_matches("Intel(R) Xeon(R) 6990P", "6###P"));
        assert!(!pattern_matches("Intel(R) Xeon(R) Gold 6248", "6###P"));
        assert!(!pattern_matches("x6990P", "6###P"));
        assert!(!pattern_matches("anything", ""));
    }

    #[test]
    fn two_epyc_9454_draw_their_tdp_not_a_per_thread_guess() {
        let t = CpuTable::builtin().unwrap();
        let m = CpuPowerModel::derive(
            &info("AMD EPYC 9454 48-Core Processor", 192, 2),
            &t,
            &data(),
            None,
            0.12,
        );
        assert_eq!(m.basis, CpuBasis::Table);
        assert!((m.tdp_seen_watts - 580.0).abs() < 1e-9, "{m:?}");
        assert!((m.power_at(1.0) - 580.0 * 1.004).abs() < 1e-9);
        assert!((m.power_at(0.0) - 580.0 * 0.12).abs() < 1e-9);
    }

    #[test]
    fn a_vm_gets_its_threads_share() {
        let t = CpuTable::builtin().unwrap();
        let m = CpuPowerModel::derive(
            &info("AMD EPYC 7742 64-Core Processor", 8, 1),
            &t,
            &data(),
            None,
            0.12,
        );
        assert!(
            (m.tdp_seen_watts - 225.0 / 128.0 * 8.0).abs() < 1e-9,
            "{m:?}"
        );
    }

    #[test]
    fn an_unknown_model_of_a_known_family_uses_the_family_and_says_so() {
        let t = CpuTable::builtin().unwrap();
        // A Turin part the table does not list, 2 sockets × 64 threads.
        let m = CpuPowerModel::derive(
            &info("AMD EPYC 9995 32-Core Processor", 128, 2),
            &t,
            &data(),
            None,
            0.12,
        );
        assert!(
            matches!(&m.basis, CpuBasis::Family(f) if f.contains("9005")),
            "{m:?}"
        );
        assert!(
            m.explanation.contains("not in the CPU table"),
            "{}",
            m.explanation
        );
        assert!(
            m.tdp_seen_watts > 100.0 && m.tdp_seen_watts <= 1000.0,
            "{m:?}"
        );
    }

    #[test]
    fn an_arm_host_without_model_name_is_recognised_by_its_part() {
        let t = CpuTable::builtin().unwrap();
        let grace = CpuInfo {
            model: None,
            logical_cpus: 72,
            sockets: 1,
            arm_part: Some("0x41:0xd4f".into()),
        };
        let m = CpuPowerModel::derive(&grace, &t, &data(), None, 0.12);
        assert_eq!(m.basis, CpuBasis::Family("NVIDIA Grace".into()));
        assert!((m.tdp_seen_watts - 250.0).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn an_unknown_cpu_never_exceeds_the_per_socket_ceiling() {
        let t = CpuTable::builtin().unwrap();
        let m = CpuPowerModel::derive(&info("Mystery CPU", 1024, 2), &t, &data(), None, 0.12);
        assert_eq!(m.basis, CpuBasis::CoreCount);
        assert!(m.tdp_seen_watts <= 1000.0, "{m:?}");
        assert!(
            m.explanation.contains("no known family"),
            "{}",
            m.explanation
        );
        let small = CpuPowerModel::derive(&info("Mystery CPU", 4, 1), &t, &data(), None, 0.12);
        assert!(
            small.tdp_seen_watts > 4.0 && small.tdp_seen_watts < 20.0,
            "{small:?}"
        );
    }
}
