//! The table of config keys: each key is written once, in `schema.rs`,
//! with its type, default, note, what "unset" means, whether it decides
//! results, and its check. Everything that lists keys reads this table:
//! `runner defaults`, the README's config table (checked by a test),
//! validation, did-you-mean, the run identity and report columns.
//!
//! `section!` turns one section's entries into the struct, its `Default`,
//! its `KEYS` and its `problems`. An entry reads
//!
//! ```text
//! lr: f64 = 1e-3, note("SGD learning rate"), check = positive;
//! limit_test: Option<usize> = None,
//!     note("use only the first N test images").unset("all", "500"),
//!     check = set_at_least_one;
//! ```
//!
//! An optional key (`Option<_>`) also carries
//! `#[serde(skip_serializing_if = "Option::is_none")]`, so an unset key is
//! absent from config.toml and from the run identity (a unit test checks).

/// One config key and what is known about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted: `train.lr` (`name` is the one key outside a section).
    pub key: &'static str,
    /// What it means, in a few words: `runner defaults` and the README.
    pub note: &'static str,
    /// For an optional key: what unset means, and an example value.
    pub unset: Option<Unset>,
    /// It does not change what a run computes (where data lives, threads,
    /// the epoch budget): left out of the run identity and report columns.
    pub neutral: bool,
    /// Part of the run identity only when set to another value than its
    /// default (see `Key::hashed_when_set`).
    pub hashed_when_set: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unset {
    /// Shown by reports for an unset key (`data.limit_test = all`), so a
    /// key unset in one run and set in another is never taken as common.
    pub meaning: &'static str,
    /// TOML, shown commented out by `runner defaults`.
    pub example: &'static str,
}

/// The start of an entry's facts: `note("...")`, then `.unset(..)` or
/// `.neutral()` as they apply. (`section!` fills in the key.)
pub const fn note(note: &'static str) -> Key {
    Key {
        key: "",
        note,
        unset: None,
        neutral: false,
        hashed_when_set: false,
    }
}

impl Key {
    /// An optional key: `meaning` when unset, `example` in `runner defaults`.
    pub const fn unset(self, meaning: &'static str, example: &'static str) -> Key {
        Key {
            unset: Some(Unset { meaning, example }),
            ..self
        }
    }

    /// Every key added from now on takes this: at its default the key is
    /// left out of the run's hash, so a config that does not set it keeps
    /// the hash (and finds the run folder) it had before the key existed.
    pub const fn hashed_when_set(self) -> Key {
        Key {
            hashed_when_set: true,
            ..self
        }
    }

    pub const fn neutral(self) -> Key {
        Key {
            neutral: true,
            ..self
        }
    }

    /// The section (`train`), or "" for a top-level key.
    pub fn section(&self) -> &'static str {
        self.key.split_once('.').map_or("", |(s, _)| s)
    }

    /// The key within its section (`lr`).
    pub fn leaf(&self) -> &'static str {
        self.key.split_once('.').map_or(self.key, |(_, l)| l)
    }
}

// How a key is spelled as an environment variable.

/// Environment variables read as config: `RUNNER_<SECTION>__<KEY>`, plus `RUNNER_NAME`.
pub const ENV_PREFIX: &str = "RUNNER_";
pub const ENV_SECTION_BREAK: &str = "__";

/// The variable that sets a dotted key: `train.lr` -> `RUNNER_TRAIN__LR`.
pub fn env_var_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', ENV_SECTION_BREAK).to_uppercase()
    )
}

/// Whether a `RUNNER_*` name (prefix removed) is one the config reads.
pub fn env_name_is_read(rest: &str) -> bool {
    let named = |part: &str| !part.is_empty() && !part.starts_with('_') && !part.ends_with('_');
    match rest.split_once(ENV_SECTION_BREAK) {
        Some((section, key)) => named(section) && named(key),
        None => rest.eq_ignore_ascii_case("name"),
    }
}

/// A rule a value must follow: the problem in words when it does not.
pub type Check<T> = fn(&T) -> Result<(), String>;

/// Defines a config section from its key entries (see the module docs).
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $section:literal {
            $(
                $(#[$attr:meta])*
                $field:ident : $ty:ty = $default:expr, $facts:expr $(, check = $check:expr)? ;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[$attr])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// This section's keys, in the order written.
            pub const KEYS: &'static [$crate::config::keys::Key] = &[
                $( $crate::config::keys::Key {
                    key: concat!($section, ".", stringify!($field)),
                    ..$facts
                }, )*
            ];

            /// The (key, problem) pairs of values that break their key's check.
            // A section without checks leaves `out` alone: it only pushes.
            #[allow(unused_variables, clippy::ptr_arg)]
            pub fn problems(&self, out: &mut Vec<(&'static str, String)>) {
                $($(
                    let check: $crate::config::keys::Check<$ty> = $check;
                    if let Err(problem) = check(&self.$field) {
                        out.push((concat!($section, ".", stringify!($field)), problem));
                    }
                )?)*
            }
        }
    };
}
pub(crate) use section;

// Checks shared by several keys.

pub fn at_least_one(v: &usize) -> Result<(), String> {
    if *v >= 1 {
        Ok(())
    } else {
        Err("must be at least 1".into())
    }
}

pub fn set_at_least_one(v: &Option<usize>) -> Result<(), String> {
    match v {
        Some(0) => Err("must be at least 1 when set".into()),
        _ => Ok(()),
    }
}

pub fn positive(v: &f64) -> Result<(), String> {
    if v.is_finite() && *v > 0.0 {
        Ok(())
    } else {
        Err(format!("must be a positive number, got {v}"))
    }
}

pub fn zero_or_positive(v: &f64) -> Result<(), String> {
    if v.is_finite() && *v >= 0.0 {
        Ok(())
    } else {
        Err(format!("must be zero or positive, got {v}"))
    }
}

/// In [0, 1): a momentum or a fraction.
pub fn below_one(v: &f64) -> Result<(), String> {
    if v.is_finite() && (0.0..1.0).contains(v) {
        Ok(())
    } else {
        Err(format!("must be in [0, 1), got {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_one_variable() {
        assert_eq!(env_var_for("train.lr"), "RUNNER_TRAIN__LR");
        assert_eq!(env_var_for("name"), "RUNNER_NAME");
        assert!(env_name_is_read("TRAIN__LR") && env_name_is_read("name"));
        assert!(!env_name_is_read("TRAIN_LR"));
        assert!(!env_name_is_read("__") && !env_name_is_read("TRAIN___LR"));
    }
}
