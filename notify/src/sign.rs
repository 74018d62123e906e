//! The webhook signature: `X-Recman-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes with the sink's secret (GitHub's
//! `X-Hub-Signature-256` scheme). Receivers recompute it and compare in
//! constant time: [`verify`] is what they do.

use ring::hmac;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Recman-Signature";

/// `sha256=<lowercase hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// True when `header` is the signature of `body` under `secret` (constant time).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = unhex(hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &tag).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2 (key "Jefe").
    #[test]
    fn matches_the_rfc_4231_vector() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_only_the_right_secret_and_body() {
        let h = sign(b"k", b"{\"a\":1}");
        assert!(verify(b"k", b"{\"a\":1}", &h));
        assert!(!verify(b"k2", b"{\"a\":1}", &h));
        assert!(!verify(b"k", b"{\"a\":2}", &h));
        assert!(!verify(b"k", b"{\"a\":1}", &h.replace("sha256=", "sha1=")));
        assert!(!verify(b"k", b"{\"a\":1}", "sha256=zz"));
    }
}
