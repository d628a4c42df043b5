//! Entries of the AI register (`register_file`) for the tests that need one.

/// One use of the register, as TOML (`[[use]]`): `id`, in production since 2025-01-01 on
/// the site `mairie`, limited risk, measured through `projects`.
pub fn production_use(id: &str, projects: &[&str]) -> String {
    format!(
        r#"
[[use]]
id = "{id}"
name = {{ fr = "Assistant", en = "Assistant" }}
purpose = {{ fr = "Répondre", en = "Answer" }}
department = "Relation citoyenne"
service = "Accueil"
accountable = "DGS"
models = ["m"]
status = "production"
production_from = "2025-01-01"
risk = "limited"
data = ["public"]
decision = "D-1"
hosting = {{ kind = "on_site", site = "mairie" }}
projects = {projects:?}
"#
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_the_projects_as_a_toml_array() {
        let text = super::production_use("chatbot", &["chat", "web"]);
        assert!(text.contains("id = \"chatbot\"\n"), "{text}");
        assert!(text.contains("projects = [\"chat\", \"web\"]\n"), "{text}");
    }
}
