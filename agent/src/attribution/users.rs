//! Unix user names by uid, from a passwd file (the host's `/etc/passwd` by default; a
//! containerised agent points it at the host's copy).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// uid → user name.
#[derive(Clone, Debug, Default)]
pub struct UserNames(HashMap<u32, Arc<str>>);

impl UserNames {
    /// Reads `path`; an unreadable file gives an empty table (rules on user names then
    /// match numeric uids only).
    pub fn load(path: &Path) -> UserNames {
        match std::fs::read_to_string(path) {
            Ok(text) => UserNames::parse(&text),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the user table; user rules will see uids only");
                UserNames::default()
            }
        }
    }

    pub fn parse(passwd: &str) -> UserNames {
        let map = passwd
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let uid = f.nth(1)?.parse().ok()?;
                (!name.is_empty()).then(|| (uid, Arc::from(name)))
            })
            .collect();
        UserNames(map)
    }

    pub fn name(&self, uid: u32) -> Option<Arc<str>> {
        self.0.get(&uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_give_names() {
        let u = UserNames::parse(
            "root:x:0:0:root:/root:/bin/bash\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken\n",
        );
        assert_eq!(u.name(1000).as_deref(), Some("alice"));
        assert_eq!(u.name(0).as_deref(), Some("root"));
        assert_eq!(u.name(5), None);
    }
}
