//! Keys and values as people type and read them: plain text when that is safe, `hex:` or
//! `b64:` otherwise. One reversible encoding shared by the REPL, `--json` and history files,
//! so that whatever kvcli prints can be pasted back in.

use base64::Engine as _;
use bytes::Bytes;

/// Binary values up to this length print as `hex:` (easier to read); longer ones as `b64:`.
const HEX_DISPLAY_BYTES_MAX: usize = 32;

/// Why a typed key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// `hex:` followed by something that is not an even number of hex digits.
    #[error("bad hex value {0:?}: expected an even number of hex digits after hex:")]
    BadHex(String),
    /// `b64:` followed by something that is not standard base64.
    #[error("bad base64 value {0:?}: expected standard base64 after b64:")]
    BadBase64(String),
}

/// Turns a typed word into bytes: `hex:6869` and `b64:aGk=` decode, anything else is taken
/// literally as UTF-8.
pub fn parse_value(word: &str) -> Result<Bytes, ValueError> {
    if let Some(hex) = word.strip_prefix("hex:") {
        return hex::decode(hex)
            .map(Bytes::from)
            .map_err(|_| ValueError::BadHex(word.to_string()));
    }
    if let Some(b64) = word.strip_prefix("b64:") {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Bytes::from)
            .map_err(|_| ValueError::BadBase64(word.to_string()));
    }
    Ok(Bytes::copy_from_slice(word.as_bytes()))
}

/// The printable form of bytes, the inverse of [`parse_value`]: plain text if it is UTF-8
/// without control characters or whitespace at the ends and cannot be mistaken for an
/// encoded form; `hex:` or `b64:` otherwise.
pub fn display_value(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        let plain = !s.chars().any(char::is_control)
            && !s.starts_with("hex:")
            && !s.starts_with("b64:")
            && s.trim() == s;
        if plain {
            return s.to_string();
        }
    }
    if bytes.len() <= HEX_DISPLAY_BYTES_MAX {
        format!("hex:{}", hex::encode(bytes))
    } else {
        format!(
            "b64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }
}

/// Like [`display_value`], but quoted when it contains spaces so that it can be typed back
/// into the REPL as one word.
pub fn display_word(bytes: &[u8]) -> String {
    let s = display_value(bytes);
    if s.is_empty() || s.contains([' ', '"', '\'', '\\', '\t']) {
        let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefixes_decode() {
        assert_eq!(parse_value("hex:00ff41").unwrap(), &b"\x00\xffA"[..]);
        assert_eq!(parse_value("HEX:00").unwrap(), &b"HEX:00"[..]);
        assert_eq!(parse_value("b64:aGk=").unwrap(), &b"hi"[..]);
        assert_eq!(parse_value("plain text").unwrap(), &b"plain text"[..]);
        assert_eq!(parse_value("hex:").unwrap(), &b""[..]);
    }

    #[test]
    fn bad_encodings_say_what_was_expected() {
        let e = parse_value("hex:abc").unwrap_err().to_string();
        assert!(e.contains("even number of hex digits"), "{e}");
        assert!(parse_value("hex:zz").is_err());
        let e = parse_value("b64:@@").unwrap_err().to_string();
        assert!(e.contains("base64"), "{e}");
    }

    #[test]
    fn display_picks_a_safe_form() {
        assert_eq!(display_value(b"hello world"), "hello world");
        assert_eq!(display_value(b"\x00\x01"), "hex:0001");
        assert_eq!(display_value(b"line\nbreak"), "hex:6c696e650a627265616b");
        assert_eq!(display_value(b"hex:41"), "hex:6865783a3431");
        assert_eq!(display_value(b" padded"), "hex:20706164646564");
        assert!(display_value(&[0xff; 40]).starts_with("b64:"));
        assert_eq!(display_word(b"two words"), "\"two words\"");
        assert_eq!(display_word(b""), "\"\"");
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(parse_value(&display_value(&bytes)).unwrap(), Bytes::from(bytes));
        }

        #[test]
        fn text_round_trips(s in "\\PC{0,40}") {
            prop_assert_eq!(parse_value(&display_value(s.as_bytes())).unwrap(), Bytes::from(s));
        }
    }
}
