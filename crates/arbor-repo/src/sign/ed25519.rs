//! Ed25519 key types, backed by *ring* (the crypto library arbor already
//! uses for SHA-256 and TLS), so no third-party type appears in arbor's
//! API and one crypto stack serves the whole binary.
//!
//! Verification is as strict as libsodium's `crypto_sign_verify_detached`,
//! which ostree's `sign-ed25519` uses: besides the RFC 8032 equation
//! (checked by *ring*, which also refuses a non-canonical `S` and, by
//! comparing encodings, a non-canonical `R`), a public key must be a
//! canonical encoding and neither it nor `R` may be a point of small order.

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

/// Length of an Ed25519 seed (the secret half of ostree's secret key).
pub const SEED_LEN: usize = 32;
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 secret key (RFC 8032 seed) with its key pair.
pub struct SigningKey {
    seed: Zeroizing<[u8; SEED_LEN]>,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// The key whose RFC 8032 seed is `seed`.
    pub fn from_bytes(seed: &[u8; SEED_LEN]) -> SigningKey {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .expect("ring takes any 32-byte seed; only the length is checked");
        SigningKey {
            seed: Zeroizing::new(*seed),
            pair,
        }
    }

    /// The key of ostree's secret-key form, seed ‖ public key; `None` if
    /// the public half is not the one derived from the seed.
    pub fn from_keypair_bytes(bytes: &[u8; SEED_LEN + PUBLIC_KEY_LEN]) -> Option<SigningKey> {
        let (seed, public) = bytes.split_at(SEED_LEN);
        let seed: &[u8; SEED_LEN] = seed.try_into().expect("split at SEED_LEN");
        let key = SigningKey::from_bytes(seed);
        (key.verifying_key().as_bytes() == public).then_some(key)
    }

    /// The seed.
    pub fn to_bytes(&self) -> [u8; SEED_LEN] {
        *self.seed
    }

    /// ostree's secret-key form: seed ‖ public key.
    pub fn to_keypair_bytes(&self) -> [u8; SEED_LEN + PUBLIC_KEY_LEN] {
        let mut out = [0; SEED_LEN + PUBLIC_KEY_LEN];
        out[..SEED_LEN].copy_from_slice(&*self.seed);
        out[SEED_LEN..].copy_from_slice(self.verifying_key().as_bytes());
        out
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let public: &[u8] = self.pair.public_key().as_ref();
        VerifyingKey(
            public
                .try_into()
                .expect("ring's Ed25519 public keys are 32 bytes"),
        )
    }

    /// Signs `data` (pure Ed25519, RFC 8032; deterministic).
    pub fn sign(&self, data: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.pair
            .sign(data)
            .as_ref()
            .try_into()
            .expect("ring's Ed25519 signatures are 64 bytes")
    }
}

impl Clone for SigningKey {
    fn clone(&self) -> SigningKey {
        SigningKey::from_bytes(&self.seed)
    }
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &SigningKey) -> bool {
        *self.seed == *other.seed
    }
}

impl Eq for SigningKey {}

/// Shows the public key only: a secret never reaches a log.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.verifying_key())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key: its 32-byte encoding, as ostree stores it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey([u8; PUBLIC_KEY_LEN]);

impl VerifyingKey {
    /// The key with this encoding. Any 32 bytes are accepted, as ostree
    /// accepts them; a key that is not a valid point verifies nothing.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> VerifyingKey {
        VerifyingKey(*bytes)
    }

    /// The encoding.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Whether `signature` is a valid signature of `data` by this key,
    /// with libsodium's strictness (see the module docs).
    pub fn verify(&self, data: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let r: &[u8; 32] = signature[..32].try_into().expect("64 = 32 + 32");
        if !is_canonical(&self.0) || has_small_order(&self.0) || has_small_order(r) {
            return false;
        }
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(data, signature)
            .is_ok()
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", hex::encode(self.0))
    }
}

/// The `y` coordinates (little-endian, sign bit cleared) of the points of
/// order 1, 2, 4 and 8, and the non-canonical encodings of 0 and 1
/// (`p`, `p + 1`): libsodium's blocklist in `ge25519_has_small_order`.
const SMALL_ORDER_Y: [[u8; 32]; 7] = [
    // 0: order 4.
    [0; 32],
    // 1: the identity.
    [
        0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0,
    ],
    // Order 8.
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    // Order 8.
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    // p - 1: order 2.
    p_plus(-1),
    // p (= 0): order 4.
    p_plus(0),
    // p + 1 (= 1): the identity.
    p_plus(1),
];

/// The little-endian encoding of `p + d` for small `d`, p = 2^255 - 19.
const fn p_plus(d: i8) -> [u8; 32] {
    let mut b = [0xff; 32];
    b[0] = (0xed_i16 + d as i16) as u8;
    b[31] = 0x7f;
    b
}

/// Whether the point encoded by `e` has small order (ignoring the sign bit
/// of `x`, as libsodium does).
fn has_small_order(e: &[u8; 32]) -> bool {
    let mut y = *e;
    y[31] &= 0x7f;
    SMALL_ORDER_Y.contains(&y)
}

/// Whether `y` (sign bit cleared) is below p = 2^255 - 19.
fn is_canonical(e: &[u8; 32]) -> bool {
    let mut y = *e;
    y[31] &= 0x7f;
    // y ≥ p only if y = 2^255 - 19 .. 2^255 - 1: all 0xff above byte 0.
    !(y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1 TEST 1.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn arr<const N: usize>(h: &str) -> [u8; N] {
        hex::decode(h).unwrap().try_into().unwrap()
    }

    #[test]
    fn rfc8032_test_1() {
        let sk = SigningKey::from_bytes(&arr(SEED));
        assert_eq!(sk.verifying_key().as_bytes(), &arr::<32>(PUBLIC));
        let sig = sk.sign(b"");
        assert_eq!(sig, arr::<64>(SIGNATURE));
        assert!(sk.verifying_key().verify(b"", &sig));
        assert!(!sk.verifying_key().verify(b"x", &sig));
        let kp = sk.to_keypair_bytes();
        assert_eq!(SigningKey::from_keypair_bytes(&kp), Some(sk.clone()));
        let mut bad = kp;
        bad[40] ^= 1;
        assert_eq!(SigningKey::from_keypair_bytes(&bad), None);
        assert!(!format!("{sk:?}").contains(&SEED[..16]), "{sk:?}");
    }

    /// libsodium (ostree's verifier) refuses weak keys and small-order R;
    /// ring alone accepts a forged signature by the identity key.
    #[test]
    fn weak_keys_and_small_order_r_are_refused() {
        let identity = VerifyingKey::from_bytes(&SMALL_ORDER_Y[1]);
        // With A = R = identity and S = 0: S·B = R + k·A holds for every
        // message, so this "signature" verifies anything.
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&SMALL_ORDER_Y[1]);
        assert!(UnparsedPublicKey::new(&ED25519, identity.as_bytes())
            .verify(b"anything", &forged)
            .is_ok());
        assert!(!identity.verify(b"anything", &forged));
        for y in SMALL_ORDER_Y {
            let mut signed = y;
            signed[31] |= 0x80;
            assert!(has_small_order(&y) && has_small_order(&signed));
        }
        assert!(!has_small_order(&arr(PUBLIC)));
        assert!(is_canonical(&p_plus(-1)));
        assert!(!is_canonical(&p_plus(0)) && !is_canonical(&[0xff; 32]));
        assert!(is_canonical(&arr(PUBLIC)));
    }
}
