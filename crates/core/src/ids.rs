//! Opaque ids with a type prefix (`sbx_`, `evt_`, `key_`, ...) and secrets.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `prefix_` + 16 random lower-case letters and digits (~82 bits). Sandbox
/// ids are also VM ids and directory names: this alphabet is safe for both.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_string(16))
}

/// A new API key: `hk_` + 40 random characters (~206 bits).
pub fn new_api_key() -> String {
    format!("hk_{}", random_string(40))
}

/// A preview slug: 20 random lower-case letters and digits (~103 bits), a
/// valid DNS label that says nothing about the sandbox behind it.
pub fn new_slug() -> String {
    random_string(20)
}

/// A preview share token: `hpt_` + 40 random characters (~206 bits).
pub fn new_token() -> String {
    format!("hpt_{}", random_string(40))
}

/// How a secret is stored: SHA-256, hex. The secrets are long random
/// strings, so a fast hash is enough (no password stretching needed).
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_differ() {
        let a = new_id("sbx");
        let b = new_id("sbx");
        assert!(a.starts_with("sbx_") && a.len() == 20);
        assert_ne!(a, b);
        let k = new_api_key();
        assert!(k.starts_with("hk_") && k.len() == 43);
        assert_eq!(hash_secret("x").len(), 64);
        assert_ne!(hash_secret(&k), hash_secret(&new_api_key()));
    }
}
