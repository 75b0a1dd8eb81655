//! Client assertions for `client_certificate`: a JWT signed with the certificate's key,
//! sent instead of a secret (`client_assertion_type=…jwt-bearer`).
//!
//! The key is parsed once into an aws-lc-rs key pair, which accepts every PEM form the
//! config does (PKCS#1, SEC1, PKCS#8); jsonwebtoken built without its PEM feature would
//! take RSA keys only as PKCS#1 DER and re-parse the key on every signature.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PSS_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::config::ClientCertificateConfig;
use crate::credentials::token::FetchError;

/// Entra rejects assertions whose `exp` is more than 10 minutes after `nbf`.
const ASSERTION_LIFETIME_SECS: u64 = 10 * 60;

/// Signs client assertions for one certificate. The header never changes, so it is
/// encoded once.
pub(super) struct AssertionSigner {
    pub(super) key: SigningKey,
    encoded_header: String,
}

pub(super) enum SigningKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl AssertionSigner {
    pub(super) fn new(config: &ClientCertificateConfig) -> Result<Self, String> {
        let key = SigningKey::from_pem(config.key_pem.expose())?;
        let certificate = config
            .chain
            .first()
            .ok_or("the file holds no certificate")?;
        let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate);
        let mut header = serde_json::json!({
            "alg": key.algorithm(),
            "typ": "JWT",
            "x5t#S256": URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
        });
        if config.send_chain {
            let chain: Vec<String> = config.chain.iter().map(|c| STANDARD.encode(c)).collect();
            header["x5c"] = serde_json::json!(chain);
        }
        Ok(Self {
            key,
            encoded_header: URL_SAFE_NO_PAD.encode(header.to_string()),
        })
    }

    /// A fresh assertion for `audience` (the token endpoint URL), valid for 10 minutes.
    pub(super) fn sign(&self, audience: &str, client_id: &str) -> Result<String, FetchError> {
        let now = unix_now();
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let message = format!(
            "{}.{}",
            self.encoded_header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(message.as_bytes())?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

impl SigningKey {
    /// The first private key in the PEM text: PKCS#1 or PKCS#8 RSA, SEC1 or PKCS#8 P-256.
    fn from_pem(pem: &str) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "it holds no readable private key".to_string())?;
        let rejected = |kind: &str, e: aws_lc_rs::error::KeyRejected| {
            format!("the {kind} private key is not usable ({e}); RSA keys need at least 2048 bits")
        };
        match der {
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der())
                .map(SigningKey::Rsa)
                .map_err(|e| rejected("RSA", e)),
            PrivateKeyDer::Sec1(key) => EcdsaKeyPair::from_private_key_der(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                key.secret_sec1_der(),
            )
            .map(SigningKey::Ec)
            .map_err(|_| {
                "the EC private key is not a P-256 key (only P-256 is supported)".to_string()
            }),
            PrivateKeyDer::Pkcs8(key) => {
                let der = key.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(der) {
                    Ok(rsa) => Ok(SigningKey::Rsa(rsa)),
                    Err(rsa_error) => EcdsaKeyPair::from_pkcs8(
                        &ECDSA_P256_SHA256_FIXED_SIGNING,
                        der,
                    )
                    .map(SigningKey::Ec)
                    .map_err(|_| {
                        format!(
                            "the PKCS#8 private key is neither a usable RSA key ({rsa_error}) \
                                 nor an EC P-256 key"
                        )
                    }),
                }
            }
            _ => Err("the private key is of an unsupported kind; use RSA or EC P-256".to_string()),
        }
    }

    /// The JWS `alg`: PS256 for RSA (what MSAL sends alongside `x5t#S256`), ES256 for P-256.
    pub(super) fn algorithm(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "PS256",
            SigningKey::Ec(_) => "ES256",
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, FetchError> {
        let failed = |_| FetchError::new("signing the client assertion failed");
        let rng = SystemRandom::new();
        match self {
            SigningKey::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PSS_SHA256, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
            // The FIXED variant yields r || s, the form JWS requires (not ASN.1 DER).
            SigningKey::Ec(key) => Ok(key.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, KeyPair, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey,
    };

    /// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (the OCTET STRING after
    /// the version and the algorithm identifier), for a test key in PKCS#1 form.
    fn pkcs1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        fn element(der: &[u8]) -> (u8, &[u8], &[u8]) {
            let (tag, first) = (der[0], der[1] as usize);
            let (len, start) = if first < 0x80 {
                (first, 2)
            } else {
                let n = first & 0x7f;
                let len = der[2..2 + n]
                    .iter()
                    .fold(0, |acc, b| acc << 8 | *b as usize);
                (len, 2 + n)
            };
            (tag, &der[start..start + len], &der[start + len..])
        }
        let (_, info, _) = element(pkcs8);
        let (_, _, rest) = element(info); // version
        let (_, _, rest) = element(rest); // algorithm
        let (tag, key, _) = element(rest);
        assert_eq!(tag, 0x04);
        key.to_vec()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn every_key_form_signs_verifiable_assertions() {
        let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let rsa_pkcs8 = rsa.as_der().unwrap().as_ref().to_vec();
        let rsa_public = rsa.public_key().as_ref().to_vec();
        let ec_pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .unwrap()
            .to_pkcs8v1()
            .unwrap();
        let ec =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref()).unwrap();
        let ec_sec1 = ec.private_key().as_der().unwrap().as_ref().to_vec();
        let ec_public = ec.public_key().as_ref().to_vec();
        let cases: [(
            String,
            &str,
            &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
            &[u8],
        ); 4] = [
            (
                pem("RSA PRIVATE KEY", &pkcs1_from_pkcs8(&rsa_pkcs8)),
                "PS256",
                &RSA_PSS_2048_8192_SHA256,
                &rsa_public,
            ),
            (
                pem("PRIVATE KEY", &rsa_pkcs8),
                "PS256",
                &RSA_PSS_2048_8192_SHA256,
                &rsa_public,
            ),
            (
                pem("EC PRIVATE KEY", &ec_sec1),
                "ES256",
                &ECDSA_P256_SHA256_FIXED,
                &ec_public,
            ),
            (
                pem("PRIVATE KEY", ec_pkcs8.as_ref()),
                "ES256",
                &ECDSA_P256_SHA256_FIXED,
                &ec_public,
            ),
        ];
        for (key_pem, alg, verification, public) in cases {
            let key = SigningKey::from_pem(&key_pem).unwrap();
            assert_eq!(key.algorithm(), alg);
            let signature = key.sign(b"header.claims").unwrap();
            UnparsedPublicKey::new(verification, public)
                .verify(b"header.claims", &signature)
                .unwrap_or_else(|_| panic!("{alg} signature does not verify"));
        }

        let p384 = EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING)
            .unwrap()
            .to_pkcs8v1()
            .unwrap();
        let failures = [
            (pem("PRIVATE KEY", p384.as_ref()), "nor an EC P-256 key"),
            (pem("PRIVATE KEY", b"not a key"), "neither a usable RSA key"),
            (
                pem("RSA PRIVATE KEY", b"not a key"),
                "RSA private key is not usable",
            ),
            (pem("EC PRIVATE KEY", b"not a key"), "not a P-256 key"),
            ("no key here".to_string(), "no readable private key"),
        ];
        for (key_pem, want) in failures {
            let Err(message) = SigningKey::from_pem(&key_pem) else {
                panic!("{want}: accepted");
            };
            assert!(message.contains(want), "{want}: {message}");
        }
    }
}
