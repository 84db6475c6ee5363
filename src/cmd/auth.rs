//! Optional command signatures (`mqtt.command_key`): commands that read or change biometric
//! data or change the device must come signed by the fleet key, as the payload
//! `{"signed": TEXT, "sig": SIG}`: TEXT is the command as JSON, `{"id", "name", "target",
//! "expires", "args"}`, and SIG the base64 ed25519 signature over TEXT's UTF-8 bytes. The
//! signature covers the bytes as sent, so any signer (any language, any JSON library) makes
//! them exactly. Unsigned, forged, expired, far-future or misdirected ones are `failed` "not
//! authorised".
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use super::Request;

/// Longest validity a signature may claim, to bound replays.
const MAX_VALIDITY_MS: u64 = 24 * 3600 * 1000;

/// A signed command's text: `name` for `target` (a device id or `all`) until `expires`.
pub fn command_text(id: &str, name: &str, target: &str, expires: &str, args: &Map<String, Value>) -> String {
    serde_json::json!({"id": id, "name": name, "target": target, "expires": expires, "args": args}).to_string()
}

/// The base64 signature of a command's text.
pub fn sign(key: &SigningKey, text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.sign(text.as_bytes()).to_bytes())
}

/// Checks a request's signature for this device at `now_ms`; the error is the reason.
pub fn verify(key: &VerifyingKey, request: &Request, device: &str, now_ms: u64) -> Result<(), String> {
    let Some(signed) = &request.signed else {
        return Err("not authorised: this command must be signed: {\"signed\": \"<command JSON>\", \"sig\": \"<base64 ed25519>\"}".into());
    };
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(&signed.sig).map_err(|_| "not authorised: `sig` is not base64".to_string())?;
    let signature = Signature::from_slice(&bytes).map_err(|_| "not authorised: `sig` is not an ed25519 signature".to_string())?;
    key.verify_strict(signed.text.as_bytes(), &signature).map_err(|_| "not authorised: bad signature".to_string())?;
    let target = if request.broadcast { "all" } else { device };
    if signed.target != target {
        return Err(format!("not authorised: signed for target `{}`, not `{target}`", signed.target));
    }
    let expires = &signed.expires;
    let expiry = humantime::parse_rfc3339(expires).map_err(|_| "not authorised: `expires` is not an RFC 3339 UTC time".to_string())?;
    let expiry_ms = expiry.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if expiry_ms <= now_ms {
        return Err(format!("not authorised: the signature expired at {expires}"));
    }
    if expiry_ms > now_ms + MAX_VALIDITY_MS {
        return Err("not authorised: `expires` is more than 24 h ahead".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &SigningKey, text: &str) -> Request {
        let payload = serde_json::json!({"signed": text, "sig": sign(key, text)}).to_string();
        Request::parse("config/set", false, payload.as_bytes(), 4096).unwrap()
    }

    #[test]
    fn the_signature_covers_the_text_as_sent_and_binds_target_and_expiry() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key();
        let now = 1_800_000_000_000;
        let expires = doorbell_base::time::rfc3339(now + 60_000);
        // Spacing and key order are the signer's: the bytes signed are the bytes checked.
        let text =
            format!(r#"{{ "args": {{"gpio.burst": 4}}, "expires": "{expires}", "target": "door-1", "name": "config/set", "id": "c1" }}"#);
        let request = signed(&key, &text);
        assert_eq!(request.args["gpio.burst"], 4);
        assert_eq!(verify(&public, &request, "door-1", now), Ok(()));
        assert!(verify(&public, &request, "door-2", now).unwrap_err().contains("signed for target `door-1`, not `door-2`"));
        assert!(verify(&public, &request, "door-1", now + 120_000).unwrap_err().contains("expired"));
        // Other arguments under the same signature.
        let mut forged = signed(&key, &text);
        forged.signed.as_mut().unwrap().text = text.replace('4', "5");
        assert_eq!(verify(&public, &forged, "door-1", now).unwrap_err(), "not authorised: bad signature");
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(verify(&public, &signed(&other, &text), "door-1", now).unwrap_err(), "not authorised: bad signature");
        let far = command_text("c2", "config/set", "door-1", &doorbell_base::time::rfc3339(now + 48 * 3600 * 1000), &Map::new());
        assert!(verify(&public, &signed(&key, &far), "door-1", now).unwrap_err().contains("more than 24 h ahead"));
        let unsigned = Request::parse("config/set", false, br#"{"id": "c3"}"#, 4096).unwrap();
        assert!(verify(&public, &unsigned, "door-1", now).unwrap_err().contains("must be signed"));
    }
}
