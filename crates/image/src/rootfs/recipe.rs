//! Recipes and what names their images: a recipe's description (its version,
//! packages and input hashes) is hashed into the image's digest, and the
//! manifest stored next to the image records it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::debian::DEBIAN_PACKAGES;
use crate::util::sha256_hex;

/// A way of building a root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recipe {
    /// busybox-static and the agent; builds offline in seconds.
    Minimal,
    /// debootstrap bookworm with Python (`/opt/venv`), git, curl, Node.js.
    Debian,
}

impl Recipe {
    pub const ALL: [Recipe; 2] = [Recipe::Minimal, Recipe::Debian];

    pub fn name(self) -> &'static str {
        match self {
            Recipe::Minimal => "minimal",
            Recipe::Debian => "debian",
        }
    }

    /// Bumped whenever the build steps change, so cached images are rebuilt.
    fn version(self) -> &'static str {
        match self {
            Recipe::Minimal => "2 busybox from trixie",
            Recipe::Debian => "2 bookworm minbase+apt",
        }
    }

    fn packages(self) -> Vec<String> {
        let list: &[&str] = match self {
            Recipe::Minimal => &["busybox-static/trixie"],
            Recipe::Debian => DEBIAN_PACKAGES,
        };
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Recipe::Minimal => "hearth-minimal",
            Recipe::Debian => "hearth-debian",
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not a known recipe.
#[derive(Debug, thiserror::Error)]
#[error("unknown rootfs recipe {0:?} (known: minimal, debian)")]
pub struct UnknownRecipe(pub String);

impl FromStr for Recipe {
    type Err = UnknownRecipe;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minimal" => Ok(Recipe::Minimal),
            // The default template; `miosa-sandbox` is the MIOSA API's name for it.
            "debian" | "default" | "miosa-sandbox" => Ok(Recipe::Debian),
            other => Err(UnknownRecipe(other.to_owned())),
        }
    }
}

/// Everything an image's content depends on; its hash names the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeDescription {
    pub recipe: String,
    pub recipe_version: String,
    pub packages: Vec<String>,
    /// Input file name -> SHA-256 of its contents.
    pub inputs: BTreeMap<String, String>,
}

impl RecipeDescription {
    pub(super) fn new(recipe: Recipe, inputs: BTreeMap<String, String>) -> Self {
        Self {
            recipe: recipe.name().to_owned(),
            recipe_version: recipe.version().to_owned(),
            packages: recipe.packages(),
            inputs,
        }
    }

    /// Hex SHA-256 over a canonical encoding (fixed field order, sorted inputs).
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a description always serializes");
        sha256_hex(&canonical)
    }
}

/// `<sha256>.json` next to each image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub digest: String,
    pub recipe: RecipeDescription,
    pub created_at: String,
    pub size_bytes: u64,
    pub build_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(busybox: &str, agent: &str) -> RecipeDescription {
        RecipeDescription::new(
            Recipe::Minimal,
            BTreeMap::from([
                ("busybox".to_owned(), busybox.to_owned()),
                ("hearth-agent".to_owned(), agent.to_owned()),
            ]),
        )
    }

    #[test]
    fn recipe_digest_is_stable() {
        let a = minimal("aa", "bb");
        assert_eq!(a.digest(), minimal("aa", "bb").digest());
        assert_eq!(a.digest().len(), 64);
        // Pinned: changing the encoding would silently orphan every cached image.
        let pinned = sha256_hex(
            br#"{"recipe":"minimal","recipe_version":"2 busybox from trixie","packages":["busybox-static/trixie"],"inputs":{"busybox":"aa","hearth-agent":"bb"}}"#,
        );
        assert_eq!(a.digest(), pinned);
    }

    #[test]
    fn recipe_digest_changes_with_any_input() {
        let base = minimal("aa", "bb").digest();
        assert_ne!(base, minimal("ab", "bb").digest());
        assert_ne!(base, minimal("aa", "bc").digest());
        let mut other_version = minimal("aa", "bb");
        other_version.recipe_version = "2".into();
        assert_ne!(base, other_version.digest());
        let debian = RecipeDescription::new(Recipe::Debian, BTreeMap::new());
        assert_ne!(base, debian.digest());
        assert!(debian.packages.contains(&"python3-venv".to_owned()));
    }

    #[test]
    fn recipe_names_parse() {
        assert_eq!("minimal".parse::<Recipe>().unwrap(), Recipe::Minimal);
        assert_eq!("debian".parse::<Recipe>().unwrap(), Recipe::Debian);
        assert_eq!("miosa-sandbox".parse::<Recipe>().unwrap(), Recipe::Debian);
        assert!("alpine".parse::<Recipe>().is_err());
        for recipe in Recipe::ALL {
            assert_eq!(recipe.to_string().parse::<Recipe>().unwrap(), recipe);
            assert!(recipe.label().len() <= 16, "ext4 labels hold 16 bytes");
        }
    }
}
