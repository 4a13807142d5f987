//! Canonical JSON (RFC 8785, the JSON Canonicalization Scheme), so that a value hashes
//! and signs to the same bytes wherever it is written: object members sorted by their
//! names' UTF-16 code units, no insignificant whitespace, strings escaped minimally,
//! numbers in ECMAScript form.
//!
//! One deliberate difference: integers that serde_json holds as `u64` or `i64` are written
//! with all their digits. RFC 8785 gives the same text up to 2^53 in magnitude and would
//! round larger integers through a double; we never lose digits instead.
//!
//! Member order comes from an explicit sort, never from the map, so the output does not
//! depend on whether serde_json's `preserve_order` feature is on somewhere in the build.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// The canonical text of `value`. Infallible: serde_json values hold no NaN or
/// infinity, and every other number has a canonical form.
pub fn to_canonical(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| utf16_order(a, b));
            out.push('{');
            for (position, (name, member)) in sorted.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_string(name, out);
                out.push(':');
                write_value(member, out);
            }
            out.push('}');
        }
    }
}

/// RFC 8785 section 3.2.3: names compare as arrays of UTF-16 code units. For ASCII
/// names (all of ours) this is plain byte order; it differs from byte order only for
/// characters above U+FFFF against U+E000..U+FFFF.
fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// RFC 8785 section 3.2.2.2: `"` and `\` escaped, the control characters below U+0020
/// as `\b \t \n \f \r` or `\u00xx` (lowercase hex), everything else as itself. This is
/// also exactly what serde_json writes.
fn write_string(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            control if u32::from(control) < 0x20 => {
                let code = u32::from(control) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xf]));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

fn write_number(number: &Number, out: &mut String) {
    if let Some(unsigned) = number.as_u64() {
        out.push_str(&unsigned.to_string());
    } else if let Some(signed) = number.as_i64() {
        out.push_str(&signed.to_string());
    } else if let Some(float) = number.as_f64() {
        write_float(float, out);
    } else {
        // Only reachable with serde_json's `arbitrary_precision`, which holds numbers
        // that fit none of the above as text; keep that text rather than invent one.
        out.push_str(&number.to_string());
    }
}

/// ECMAScript's Number::toString (RFC 8785 section 3.2.2.3): the shortest digits that
/// read back as the same double, placed by the exponent rules of ECMA-262 7.1.12.1.
fn write_float(float: f64, out: &mut String) {
    if float == 0.0 {
        // Both zeros are written "0".
        out.push('0');
        return;
    }
    if float < 0.0 {
        out.push('-');
    }
    let magnitude = float.abs();
    // Rust's `{:e}` writes the shortest digits that round-trip, `d[.ddd]e<exp>`, but
    // breaks an exact tie between two such candidates upwards, where ECMAScript picks
    // the even one. Rounding the exact value to that many digits (which Rust does half
    // to even) gives ECMAScript's choice, provided it still round-trips.
    let shortest = format!("{magnitude:e}");
    let count = shortest
        .bytes()
        .take_while(|b| *b != b'e')
        .filter(u8::is_ascii_digit)
        .count();
    let rounded = format!("{magnitude:.*e}", count.saturating_sub(1));
    let scientific = if rounded.parse::<f64>() == Ok(magnitude) {
        rounded
    } else {
        shortest
    };
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    // The value is 0.digits * 10^point.
    let point = exponent + 1;
    let count = digits.len() as i32;
    if count <= point && point <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - count) as usize));
    } else if 0 < point && point <= 21 {
        let (whole, fraction) = digits.split_at(point as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let shown = point - 1;
        out.push('e');
        out.push(if shown < 0 { '-' } else { '+' });
        out.push_str(&shown.unsigned_abs().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn float(bits: u64) -> String {
        let mut out = String::new();
        write_float(f64::from_bits(bits), &mut out);
        out
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        let value: Value = serde_json::from_str(
            r#"{ "b": [1, {"z": null, "a": true}], "a": "x", "A": false, "": -3 }"#,
        )
        .unwrap();
        assert_eq!(
            to_canonical(&value),
            r#"{"":-3,"A":false,"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn sorts_by_utf16_code_units_not_bytes() {
        // U+10000 is D800 DC00 in UTF-16, so it sorts before U+E000, though its UTF-8
        // bytes (F0 ...) sort after (EE ...).
        let value = json!({"\u{e000}": 1, "\u{10000}": 2, "z": 3});
        assert_eq!(
            to_canonical(&value),
            "{\"z\":3,\"\u{10000}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn escapes_strings_as_serde_json_does() {
        let mut samples: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(String::from)
            .collect();
        samples.push("quote \" backslash \\ slash / é € 𝄞 \u{7f} \u{2028}".into());
        for sample in samples {
            let value = Value::String(sample.clone());
            assert_eq!(
                to_canonical(&value),
                serde_json::to_string(&value).unwrap(),
                "{sample:?}"
            );
        }
        assert_eq!(to_canonical(&json!("\u{1f}\n")), r#""\u001f\n""#);
    }

    #[test]
    fn integers_keep_all_their_digits() {
        let value = json!([0, -1, 9007199254740993u64, u64::MAX, i64::MIN]);
        assert_eq!(
            to_canonical(&value),
            "[0,-1,9007199254740993,18446744073709551615,-9223372036854775808]"
        );
    }

    #[test]
    fn floats_follow_rfc_8785_appendix_b() {
        // (IEEE 754 bits, expected text) from RFC 8785 Appendix B.
        let cases = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in cases {
            assert_eq!(float(bits), expected, "{bits:#018x}");
        }
        let parsed: Value = serde_json::from_str("[1.0, 1.5, -0.0, 1e300, 0.1]").unwrap();
        assert_eq!(to_canonical(&parsed), "[1,1.5,0,1e+300,0.1]");
    }

    #[test]
    fn canonical_text_reads_back_to_itself() {
        let value = json!({"k": [1.25, "s\u{0}", {"n": null}], "e": {}, "a": []});
        let text = to_canonical(&value);
        let again: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(to_canonical(&again), text);
    }
}
