//! Secrets in memory and at rest: a redacting wrapper and Argon2id hashing.
//!
//! A password lives in a [`Secret`] from the moment it is read until the writer hashes or
//! verifies it; `Debug` prints `***`, and there is no `Display` or `Serialize`, so it cannot
//! reach a report, a log or an error text by accident.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value in clear; callers hash or verify it and drop it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Hashes a password with Argon2id (the crate's default parameters) and a random salt, as a PHC string.
pub fn hash_password(password: &Secret) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password failed: {e}"))
}

/// Whether `password` matches a stored PHC hash; a malformed stored hash never matches.
pub fn password_matches(password: &Secret, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let pw = Secret::new("correct horse".into());
        let hash = hash_password(&pw).unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(password_matches(&pw, &hash));
        assert!(!password_matches(&Secret::new("wrong horse".into()), &hash));
        assert!(!password_matches(&pw, "not a hash"));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let pw = Secret::new("hunter22".into());
        assert_eq!(format!("{pw:?}"), "***");
        assert!(!format!("{:?}", Some(pw)).contains("hunter22"));
    }
}
