//! Scroll and point-in-time ids tied to the key they were handed to, without shared state.
//!
//! An engine's scroll or PIT id reads the indices of the search that opened it, so a key that
//! holds someone else's id could read indices it does not cover, and close contexts that other
//! clients (reindex jobs among them) still use. The sidecar hands a keyed caller
//! `ss1.<tag>.<engine id>`, where the tag is an HMAC-SHA256 (truncated to 128 bits) of the
//! engine id under a secret derived from the caller's own key; any sidecar that knows the key
//! table recomputes it, so replicas behind a load balancer agree without storing anything. A
//! handle whose tag does not match the presenting key (another key's, or a bare engine id) is
//! refused; a matching one is unwrapped before the request goes on.
//!
//! Without keys (loopback, everyone is admin) ids pass unchanged. Pure.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "ss1.";
const TAG_LEN: usize = 22; // 16 bytes, base64url without padding

/// The secret a key signs its handles with (derived from the key's digest, never the key).
#[derive(Clone, PartialEq, Eq)]
pub struct HandleKey([u8; 32]);

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(<redacted>)")
    }
}

impl HandleKey {
    /// The handle secret of the key whose SHA-256 digest is `digest`.
    pub fn of_digest(digest: &[u8; 32]) -> Self {
        HandleKey(Sha256::new().chain_update(b"semantic-sidecar handles v1").chain_update(digest).finalize().into())
    }

    fn tag(&self, id: &str) -> String {
        let mac = hmac_sha256(&self.0, id.as_bytes());
        URL_SAFE_NO_PAD.encode(&mac[..16])
    }

    /// The handle of engine id `id` for this key.
    pub fn sign(&self, id: &str) -> String {
        format!("{PREFIX}{}.{id}", self.tag(id))
    }

    /// The engine id inside `handle`, when this key signed it.
    pub fn open<'a>(&self, handle: &'a str) -> Option<&'a str> {
        let rest = handle.strip_prefix(PREFIX)?;
        let (tag, id) = (rest.get(..TAG_LEN)?, rest.get(TAG_LEN + 1..)?);
        if rest.as_bytes().get(TAG_LEN) != Some(&b'.') || id.is_empty() {
            return None;
        }
        bool::from(self.tag(id).as_bytes().ct_eq(tag.as_bytes())).then_some(id)
    }

    /// Signs the ids an engine answer hands out: top-level `_scroll_id` and `pit_id` (and `id`
    /// when `opened_pit`, the answer to opening a PIT), and the same in `_msearch`'s `responses`.
    /// Returns whether anything changed.
    pub fn sign_answer(&self, v: &mut Value, opened_pit: bool) -> bool {
        let mut changed = false;
        let mut sign_in = |o: &mut serde_json::Map<String, Value>| {
            let fields: &[&str] = if opened_pit { &["_scroll_id", "pit_id", "id"] } else { &["_scroll_id", "pit_id"] };
            for f in fields {
                if let Some(Value::String(s)) = o.get_mut(*f) {
                    *s = self.sign(s);
                    changed = true;
                }
            }
        };
        if let Some(o) = v.as_object_mut() {
            sign_in(o);
            if let Some(Value::Array(rs)) = o.get_mut("responses") {
                rs.iter_mut().filter_map(Value::as_object_mut).for_each(&mut sign_in);
            }
        }
        changed
    }
}

fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key(n: u8) -> HandleKey {
        HandleKey::of_digest(&[n; 32])
    }

    #[test]
    fn hmac_matches_rfc_4231_case_1() {
        // RFC 4231 test case 1 uses a 20-byte key; padded with zeros to 32 it gives the same MAC
        let mut k = [0u8; 32];
        k[..20].copy_from_slice(&[0x0b; 20]);
        let mac = hmac_sha256(&k, b"Hi There");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }

    #[test]
    fn a_handle_opens_only_for_its_key() {
        let h = key(1).sign("FGluY2x1ZGV+/=");
        assert_eq!(key(1).open(&h), Some("FGluY2x1ZGV+/="));
        assert_eq!(key(2).open(&h), None, "another key's handle");
        assert_eq!(key(1).open("FGluY2x1ZGV"), None, "a bare engine id");
        assert_eq!(key(1).open(&h.replace("ss1.", "ss1.x")), None);
        assert_eq!(key(1).open(&format!("{h}x")), None, "the id is covered by the tag");
        assert_eq!(key(1).open("ss1."), None);
    }

    #[test]
    fn answers_get_their_ids_signed() {
        let k = key(3);
        let mut v = json!({"_scroll_id": "s", "hits": {}, "responses": [{"pit_id": "p"}], "id": "not-a-pit"});
        assert!(k.sign_answer(&mut v, false));
        assert_eq!(k.open(v["_scroll_id"].as_str().unwrap()), Some("s"));
        assert_eq!(k.open(v["responses"][0]["pit_id"].as_str().unwrap()), Some("p"));
        assert_eq!(v["id"], "not-a-pit");
        let mut opened = json!({"id": "pit"});
        assert!(k.sign_answer(&mut opened, true));
        assert_eq!(k.open(opened["id"].as_str().unwrap()), Some("pit"));
        assert!(!k.sign_answer(&mut json!({"hits": {}}), false));
    }

    proptest! {
        #[test]
        fn sign_then_open_is_the_id(id in "[A-Za-z0-9+/=_.-]{1,80}", a in 0u8..4, b in 0u8..4) {
            let h = key(a).sign(&id);
            prop_assert_eq!(key(b).open(&h), (a == b).then_some(id.as_str()));
        }
    }
}
