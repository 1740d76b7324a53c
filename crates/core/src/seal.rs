//! Sealing: what the server must keep but no reader of its data directory
//! may read (responses that carry a credential, and later the secrets
//! vault) is encrypted with XChaCha20-Poly1305 under a 256-bit key kept in
//! `<data_dir>/secrets.key` (0600, made on the first start). A sealed value
//! is bound to its context (`aad`): a row copied to another tenant's or
//! another key's place does not open.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The key file's name under the data directory.
pub const KEY_FILE: &str = "secrets.key";
/// What every sealed value starts with: the format, then the nonce.
const MAGIC: &[u8; 4] = b"hs1\0";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// Seals and opens values under the server's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A sealed value that does not open: another key, another context, or
/// damaged bytes.
#[derive(Debug, thiserror::Error)]
#[error("sealed value does not open (another key or context, or damaged)")]
pub struct Unsealable;

impl Sealer {
    /// The sealer of the key in `path`, made (0600) when missing. A key
    /// file of the wrong size is an error, never replaced: values sealed
    /// under it would be lost.
    pub fn open_or_create(path: &Path) -> std::io::Result<Sealer> {
        match std::fs::read(path) {
            Ok(bytes) => Sealer::from_key(&bytes).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} holds {} bytes, not a {KEY_LEN}-byte key",
                        path.display(),
                        bytes.len()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                f.write_all(&key)?;
                f.sync_all()?;
                Ok(Sealer {
                    cipher: XChaCha20Poly1305::new(&key),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The sealer of a raw 32-byte key.
    pub fn from_key(key: &[u8]) -> Option<Sealer> {
        (key.len() == KEY_LEN).then(|| Sealer {
            cipher: XChaCha20Poly1305::new(key.into()),
        })
    }

    /// A value only this key derives from `input` (for `context`): the
    /// same every time, unguessable without the key. The AEAD serves as a
    /// PRF: the nonce is a hash of context and input, and each nonce only
    /// ever encrypts the same (all-zero) block.
    pub fn derive(&self, context: &[u8], input: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(context)
            .chain_update([0])
            .chain_update(input)
            .finalize();
        let out = self
            .cipher
            .encrypt(XNonce::from_slice(&digest[..24]), [0u8; 32].as_slice())
            .unwrap_or_default();
        let mut key = [0u8; 32];
        key.copy_from_slice(&out[..32.min(out.len())]);
        key
    }

    /// `plain`, encrypted and bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for in-memory
        // buffers; the empty fallback would only fail to open later.
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// What [`Sealer::seal`] sealed under the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or(Unsealable)?;
        if rest.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_stable_per_input_and_key() {
        let a = Sealer::from_key(&[7u8; 32]).expect("key");
        let b = Sealer::from_key(&[8u8; 32]).expect("key");
        assert_eq!(a.derive(b"ctx", b"x"), a.derive(b"ctx", b"x"));
        assert_ne!(a.derive(b"ctx", b"x"), a.derive(b"ctx", b"y"));
        assert_ne!(a.derive(b"ctx", b"x"), a.derive(b"other", b"x"));
        assert_ne!(a.derive(b"ctx", b"x"), b.derive(b"ctx", b"x"));
        assert_ne!(a.derive(b"ctx", b"x"), [0u8; 32]);
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = Sealer::open_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = a.seal(b"ten_a/key1", b"hk_the_plain_key");
        assert!(!sealed
            .windows(b"hk_the_plain_key".len())
            .any(|w| w == b"hk_the_plain_key"));
        // The same key file opens it again (a restart).
        let again = Sealer::open_or_create(&path).unwrap();
        assert_eq!(
            again.open(b"ten_a/key1", &sealed).unwrap(),
            b"hk_the_plain_key"
        );
        // Another context, another key, or a flipped bit do not.
        assert!(again.open(b"ten_b/key1", &sealed).is_err());
        let other = Sealer::from_key(&[7u8; 32]).unwrap();
        assert!(other.open(b"ten_a/key1", &sealed).is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(again.open(b"ten_a/key1", &bad).is_err());
        assert!(again.open(b"ten_a/key1", b"plain text").is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(a.seal(b"x", b"v"), a.seal(b"x", b"v"));
    }

    #[test]
    fn a_key_file_of_the_wrong_size_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"short").unwrap();
        let err = Sealer::open_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("not a 32-byte key"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }
}
