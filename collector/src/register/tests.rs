//! The register's validation: data-driven, every problem at once.

use std::path::Path;

use super::*;

/// Five uses over three departments: one external, one retired, one spanning two projects.
pub const FIVE_USES: &str = r#"
[[use]]
id = "chatbot-citoyen"
name = { fr = "Assistant conversationnel citoyen", en = "Citizen chatbot" }
purpose = { fr = "Répondre aux questions des habitants", en = "Answer residents' questions" }
department = "Relation citoyenne"
service = "Accueil numérique"
accountable = "Directrice de la relation citoyenne"
models = ["mistral-small-3.1"]
status = "production"
pilot_from = "2025-03-01"
production_from = "2025-09-01"
risk = "limited"
data = ["personal", "public"]
decision = "Délibération 2025-042 du 12 mars 2025"
hosting = { kind = "on_site", site = "mairie" }
projects = ["chat", "chat-rag"]
"#;

fn cx() -> Context {
    Context {
        sites: Some(vec!["mairie".into(), "default".into()]),
    }
}

fn parse(text: &str) -> Result<Register, RegisterError> {
    Register::from_toml(text, &cx(), Path::new("."))
}

#[test]
fn a_valid_use_maps_its_projects() {
    let r = parse(FIVE_USES).unwrap();
    assert_eq!(r.use_of("chat-rag").unwrap().id, "chatbot-citoyen");
    assert_eq!(r.use_of("other"), None);
    assert_eq!(r.departments(), vec!["Relation citoyenne"]);
}

#[test]
fn every_problem_of_a_broken_register_is_reported_at_once() {
    let text = r#"
[[use]]
id = "Chat Bot"
name = { fr = "Assistant" }
department = "Relation citoyenne"
service = ""
accountable = "DGS"
models = []
status = "live"
risk = "extreme"
data = ["secret"]
decision = "D-1"
hosting = { kind = "on_site", site = "nowhere" }
projects = ["chat"]

[[use]]
id = "ocr"
name = { fr = "OCR", en = "OCR" }
purpose = { fr = "Lire", en = "Read" }
department = "Finances"
service = "Courrier"
accountable = "DAF"
models = ["m"]
status = "retired"
pilot_from = "2025-06-01"
production_from = "2025-01-01"
risk = "minimal"
data = ["public"]
decision = "D-2"
hosting = { kind = "external" }
projects = ["chat"]
[[use.volume]]
month = "2026-13"
factor = "nope"
"#;
    let Err(RegisterError::Invalid { problems, .. }) = parse(text) else {
        panic!("accepted");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "use[0].id",
            "use[0].name.en",
            "use[0].purpose.fr",
            "use[0].purpose.en",
            "use[0].service",
            "use[0].models",
            "use[0].status",
            "use[0].risk",
            "use[0].data[0]",
            "use[0].hosting.site",
            "use[1].projects[0]",
            "use[1].retired_on",
            "use[1].production_from",
            "use[1].projects",
            "use[1].hosting.provider",
            "use[1].volume[0].month",
            "use[1].volume[0].factor",
            "use[1].volume[0].output_tokens",
        ],
        "{problems:#?}"
    );
    let text = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("already belongs to use \"Chat Bot\""),
        "{text}"
    );
    assert!(
        text.contains("allowed are pilot, production, retired"),
        "{text}"
    );
    assert!(text.contains("\"nowhere\" is not a site"), "{text}");
}

#[test]
fn external_volumes_are_checked_and_estimated() {
    let text = r#"
[[use]]
id = "redaction"
name = { fr = "Aide à la rédaction", en = "Drafting aid" }
purpose = { fr = "Rédiger des courriers", en = "Draft letters" }
department = "Finances"
service = "Courrier"
accountable = "DAF"
models = ["mistral-small-3.1"]
status = "pilot"
pilot_from = "2026-01-15"
risk = "minimal"
data = ["public"]
decision = "Comité numérique du 10 janvier 2026"
hosting = { kind = "external", provider = "Mistral AI", service = "La Plateforme" }
[[use.volume]]
month = "2026-03"
factor = "mistral-small-3.1"
output_tokens = 2000000
[[use.volume]]
month = "2026-03"
factor = "gemini-apps-median-text-prompt"
requests = 100
"#;
    let r = parse(text).unwrap();
    let u = r.get("redaction").unwrap();
    assert_eq!(u.volumes.len(), 2);
    let e = external::estimate(&u.volumes[1]).unwrap();
    // 100 requests × 0.24 Wh = 24 Wh = 86.4e9 µJ.
    assert_eq!(e.estimated_energy_uj, 86_400_000_000);
    assert!(e.estimated);
    let bad = text.replace("output_tokens = 2000000", "requests = 5");
    let Err(RegisterError::Invalid { problems, .. }) = parse(&bad) else {
        panic!("accepted");
    };
    assert_eq!(
        problems[0].key, "use[0].volume[0].output_tokens",
        "{problems:?}"
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../../deploy/register.toml");
    let r = Register::from_toml(text, &Context::default(), Path::new(".")).unwrap();
    assert_eq!(r.uses.len(), 5);
}
