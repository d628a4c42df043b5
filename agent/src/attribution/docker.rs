//! Docker container names and labels, read from the engine's own state directory
//! (`/var/lib/docker/containers/ID/config.v2.json`, under a configurable root), so that
//! rules can match a container by name or label without talking to the Docker API.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// Most containers kept in the cache.
const MAX_CACHED: usize = 4096;

/// What a rule can see of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// The container name, without Docker's leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ConfigV2 {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<InnerConfig>,
}

#[derive(Deserialize)]
struct InnerConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Container metadata by id, cached (a container's name and labels do not change).
pub struct ContainerCache {
    root: PathBuf,
    cache: HashMap<String, Option<Arc<ContainerMeta>>>,
}

impl ContainerCache {
    /// `root` is Docker's data root (`/var/lib/docker` by default).
    pub fn new(root: &Path) -> ContainerCache {
        ContainerCache {
            root: root.to_path_buf(),
            cache: HashMap::new(),
        }
    }

    /// The container's metadata, `None` when Docker does not know it (another runtime,
    /// no permission, malformed state: logged once).
    pub fn container(&mut self, id: &str) -> Option<Arc<ContainerMeta>> {
        if let Some(c) = self.cache.get(id) {
            return c.clone();
        }
        // Bounded: containers come and go; a full cache is simply rebuilt.
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        let path = self.root.join("containers").join(id).join("config.v2.json");
        let meta = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<ConfigV2>(&bytes) {
                Ok(c) => Some(Arc::new(ContainerMeta {
                    name: c.name.trim_start_matches('/').to_string(),
                    labels: c.config.and_then(|c| c.labels).unwrap_or_default(),
                })),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "container state is not Docker's config.v2.json format");
                    None
                }
            },
            Err(_) => None,
        };
        self.cache.insert(id.to_string(), meta.clone());
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_come_from_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        let c = dir.path().join("containers").join(&id);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("config.v2.json"),
            r#"{"ID":"x","Name":"/ocr-worker","Config":{"Image":"ocr","Labels":{"empreinte.io/project":"archives"}}}"#,
        )
        .unwrap();
        let mut cache = ContainerCache::new(dir.path());
        let meta = cache.container(&id).unwrap();
        assert_eq!(meta.name, "ocr-worker");
        assert_eq!(meta.labels["empreinte.io/project"], "archives");
        assert!(cache.container(&"cd".repeat(32)).is_none());
        std::fs::write(c.join("config.v2.json"), "{").unwrap();
        assert!(cache.container(&id).is_some(), "cached");
        let mut fresh = ContainerCache::new(dir.path());
        assert!(
            fresh.container(&id).is_none(),
            "malformed state gives no metadata, no panic"
        );
    }
}
