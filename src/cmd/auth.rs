//! Optional command signatures (`mqtt.command_key`): commands that change the device must
//! carry an ed25519 signature by the fleet key over their name, id, target, expiry and
//! arguments. Unsigned, forged, expired or far-future ones are `failed` "not authorised".

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use super::Request;

/// Longest validity a signature may claim, to bound replays.
const MAX_VALIDITY_MS: u64 = 24 * 3600 * 1000;

/// The exact bytes that are signed: a version tag, then one field per line, then the
/// arguments as JSON with keys sorted (so any signer can reproduce them).
pub fn signed_message(name: &str, id: &str, target: &str, expires: &str, args: &Map<String, Value>) -> String {
    format!("doorbell-cmd-v1\n{name}\n{id}\n{target}\n{expires}\n{}", canonical(&Value::Object(args.clone())))
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// Signs a command for `target` (a device id or `all`); the base64 signature.
pub fn sign(key: &SigningKey, name: &str, id: &str, target: &str, expires: &str, args: &Map<String, Value>) -> String {
    let signature = key.sign(signed_message(name, id, target, expires, args).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
}

/// Checks a request's signature for this device at `now_ms`; the error is the reason.
pub fn verify(key: &VerifyingKey, request: &Request, device: &str, now_ms: u64) -> Result<(), String> {
    let (Some(sig), Some(expires)) = (&request.sig, &request.expires) else {
        return Err("not authorised: this command must be signed (`sig`, `expires`)".into());
    };
    let expiry = humantime::parse_rfc3339(expires).map_err(|_| "not authorised: `expires` is not an RFC 3339 UTC time".to_string())?;
    let expiry_ms = expiry.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if expiry_ms <= now_ms {
        return Err(format!("not authorised: the signature expired at {expires}"));
    }
    if expiry_ms > now_ms + MAX_VALIDITY_MS {
        return Err("not authorised: `expires` is more than 24 h ahead".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(sig).map_err(|_| "not authorised: `sig` is not base64".to_string())?;
    let signature = Signature::from_slice(&bytes).map_err(|_| "not authorised: `sig` is not an ed25519 signature".to_string())?;
    let target = if request.broadcast { "all" } else { device };
    let message = signed_message(&request.name, &request.id, target, expires, &request.args);
    key.verify_strict(message.as_bytes(), &signature).map_err(|_| "not authorised: bad signature".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(args: &str, sig: Option<String>, expires: &str) -> Request {
        Request {
            id: "c1".into(),
            name: "config/set".into(),
            args: serde_json::from_str(args).unwrap(),
            sig,
            expires: Some(expires.into()),
            broadcast: false,
        }
    }

    #[test]
    fn signature_binds_name_id_target_expiry_and_arguments() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key();
        let now = 1_800_000_000_000;
        let expires = crate::time::rfc3339(now + 60_000);
        let args: Map<String, Value> = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": [1, 2]}}"#).unwrap();
        let sig = sign(&key, "config/set", "c1", "door-1", &expires, &args);
        // Argument order does not matter, content does.
        assert_eq!(
            verify(&public, &request(r#"{"a": {"x": [1, 2], "y": 2}, "b": 1}"#, Some(sig.clone()), &expires), "door-1", now),
            Ok(())
        );
        let forged = verify(&public, &request(r#"{"a": {"x": [1, 2], "y": 3}, "b": 1}"#, Some(sig.clone()), &expires), "door-1", now);
        assert_eq!(forged.unwrap_err(), "not authorised: bad signature");
        let other_device = verify(&public, &request(r#"{"b": 1, "a": {"y": 2, "x": [1, 2]}}"#, Some(sig.clone()), &expires), "door-2", now);
        assert!(other_device.is_err());
        let late = verify(&public, &request(r#"{"b": 1, "a": {"y": 2, "x": [1, 2]}}"#, Some(sig), &expires), "door-1", now + 120_000);
        assert!(late.unwrap_err().contains("expired"));
        assert!(verify(&public, &request("{}", None, &expires), "door-1", now).unwrap_err().contains("must be signed"));
    }
}
