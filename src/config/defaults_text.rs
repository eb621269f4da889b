//! The key table in words: `runner defaults` (itself a valid spec) and
//! the README's config table (a test keeps the README equal to it).

use super::keys::Key;
use super::schema::{RunConfig, NAME_KEY};

/// Each key's default as TOML text (`"mnist"`, `0.001`); None when unset.
fn default_value(key: &Key) -> Option<String> {
    let table = toml::Table::try_from(RunConfig::default()).expect("defaults serialize");
    let value = match key.section() {
        "" => table.get(key.leaf()),
        section => table.get(section)?.as_table()?.get(key.leaf()),
    };
    value.map(|v| v.to_string())
}

/// Every key a spec can set, with its default and what it means: the text
/// of `runner defaults`, itself a valid spec.
pub fn default_toml() -> String {
    let mut out = String::from(
        "# Every config key with its default. A spec file sets any of them;\n\
         # RUNNER_<SECTION>__<KEY> variables and --set KEY=VALUE override it.\n\
         # Keys shown commented out are unset by default (an example value).\n",
    );
    let mut section = "";
    for key in RunConfig::keys() {
        if key.section() != section {
            section = key.section();
            out.push_str(&format!("\n[{section}]\n"));
        }
        let line = match (key.unset, default_value(key)) {
            (Some(unset), _) => format!("# {} = {}", key.leaf(), unset.example),
            // The name follows the spec file's stem unless set.
            (None, Some(value)) if *key == NAME_KEY => format!("# {} = {value}", key.leaf()),
            (None, Some(value)) => format!("{} = {value}", key.leaf()),
            // Not expected: a key without a default is optional (a test checks).
            (None, None) => format!("# {}", key.leaf()),
        };
        out.push_str(&format!("{line:<28} # {}\n", key.note));
    }
    out
}

/// The README's config table, one row per key.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for key in RunConfig::keys() {
        let default = match (key.unset, default_value(key)) {
            (Some(unset), _) => format!("({})", unset.meaning),
            (None, _) if *key == NAME_KEY => "(the spec file's stem)".into(),
            (None, value) => format!("`{}`", value.unwrap_or_default()),
        };
        out.push_str(&format!("| `{}` | {default} | {} |\n", key.key, key.note));
    }
    out
}
