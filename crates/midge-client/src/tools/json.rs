//! A JSON value, parser and printer that reproduce cJSON 1.7 (what Debian's
//! mosquitto_sub links) byte for byte, so `-F %j`, `-F %J` and `--pretty`
//! print what mosquitto_sub prints: the same number formatting (`%1.15g`,
//! else `%1.17g`), the same escapes, the same tab-indented pretty layout,
//! and the same leniencies and refusals when parsing a payload.
//!
//! Strings are bytes: cJSON passes bytes >= 0x80 through untouched and
//! stops at a NUL, and so do we.

/// A parsed or built JSON value. Object members keep their order and may
/// repeat a key, as in cJSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(Vec<u8>),
    Array(Vec<Value>),
    Object(Vec<(Vec<u8>, Value)>),
}

impl Value {
    /// A string value as cJSON_CreateString makes it: cut at the first NUL.
    pub fn c_string(b: &[u8]) -> Value {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        Value::String(b[..end].to_vec())
    }
}

const NESTING_LIMIT: usize = 1000;

/// Parses `input` as cJSON_ParseWithOpts(…, require_null_terminated) does:
/// one value, blanks (any byte <= 32) around it, nothing after. A NUL in the
/// payload ends cJSON's view of it, so the parse then fails.
pub fn parse(input: &[u8]) -> Option<Value> {
    let mut p = Parser {
        s: input,
        i: 0,
        depth: 0,
    };
    if p.s.starts_with(b"\xEF\xBB\xBF") {
        p.i = 3;
    }
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return None;
    }
    Some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        // cJSON sees the payload as a C string: a NUL is its end.
        self.s.get(self.i).copied().filter(|b| *b != 0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b) if b <= 32) {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Option<Value> {
        let rest = &self.s[self.i..];
        if rest.starts_with(b"null") {
            self.i += 4;
            return Some(Value::Null);
        }
        if rest.starts_with(b"false") {
            self.i += 5;
            return Some(Value::Bool(false));
        }
        if rest.starts_with(b"true") {
            self.i += 4;
            return Some(Value::Bool(true));
        }
        match self.peek()? {
            b'"' => self.string().map(Value::String),
            b'-' | b'0'..=b'9' => self.number(),
            b'[' => self.array(),
            b'{' => self.object(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Value> {
        // cJSON copies at most 63 bytes of [0-9+-eE.] and hands them to strtod.
        let start = self.i;
        let mut end = start;
        while end < self.s.len()
            && end - start < 63
            && matches!(self.s[end], b'0'..=b'9' | b'+' | b'-' | b'e' | b'E' | b'.')
        {
            end += 1;
        }
        let (value, used) = strtod(&self.s[start..end])?;
        self.i = start + used;
        Some(Value::Number(value))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        let t = std::str::from_utf8(h).ok()?;
        if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(t, 16).ok()
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        // At the opening quote.
        let mut i = self.i + 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(i).filter(|b| **b != 0)?;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(i + 1).filter(|b| **b != 0)?;
                    match e {
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'u' => {
                            let first = self.hex4(i + 2)?;
                            let mut used = 6;
                            let cp = if (0xDC00..=0xDFFF).contains(&first) {
                                return None;
                            } else if (0xD800..=0xDBFF).contains(&first) {
                                if self.s.get(i + 6) != Some(&b'\\')
                                    || self.s.get(i + 7) != Some(&b'u')
                                {
                                    return None;
                                }
                                let second = self.hex4(i + 8)?;
                                if !(0xDC00..=0xDFFF).contains(&second) {
                                    return None;
                                }
                                used = 12;
                                0x10000 + (((first & 0x3FF) << 10) | (second & 0x3FF))
                            } else {
                                first
                            };
                            let mut buf = [0u8; 4];
                            let c = char::from_u32(cp)?;
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            i += used;
                            continue;
                        }
                        _ => return None,
                    }
                    i += 2;
                    continue;
                }
                _ => out.push(b),
            }
            i += 1;
        }
        self.i = i + 1;
        // A \u0000 ends the C string cJSON keeps.
        if let Some(nul) = out.iter().position(|c| *c == 0) {
            out.truncate(nul);
        }
        Some(out)
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= NESTING_LIMIT).then_some(())
    }

    fn array(&mut self) -> Option<Value> {
        self.enter()?;
        self.i += 1;
        self.ws();
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Some(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(Value::Array(items))
    }

    fn object(&mut self) -> Option<Value> {
        self.enter()?;
        self.i += 1;
        self.ws();
        let mut members = Vec::new();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Some(Value::Object(members));
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            let v = self.value()?;
            members.push((key, v));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(Value::Object(members))
    }
}

/// C's strtod on a decimal number: the longest prefix that is one, and how
/// many bytes it took. `None` when no prefix is a number.
fn strtod(s: &[u8]) -> Option<(f64, usize)> {
    let mut i = 0;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < s.len() && s[i] == b'.' {
        let f = i + 1;
        let mut j = f;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
        }
        digits += j - f;
        if digits > 0 {
            i = j;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let mut j = i + 1;
        if j < s.len() && (s[j] == b'+' || s[j] == b'-') {
            j += 1;
        }
        let e = j;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
        }
        if j > e {
            i = j;
        }
    }
    let text = std::str::from_utf8(&s[..i]).ok()?;
    let mut t = text.to_string();
    if t.ends_with('.') {
        t.push('0');
    }
    if t.starts_with('.') || t.starts_with("-.") || t.starts_with("+.") {
        t = t.replacen('.', "0.", 1);
    }
    t.parse::<f64>().ok().map(|v| (v, i))
}

/// C's `%1.<prec>g`.
pub fn format_g(d: f64, prec: usize) -> String {
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf" } else { "inf" }.into();
    }
    let prec = prec.max(1);
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{:.*e}", prec - 1, d);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let mant = strip_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{:.*}", decimals, d)).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// cJSON's print_number.
fn number_text(d: f64) -> String {
    if d.is_nan() || d.is_infinite() {
        return "null".into();
    }
    let s = format_g(d, 15);
    let back: f64 = s.parse().unwrap_or(f64::NAN);
    // cJSON's compare_double: equal within a relative DBL_EPSILON.
    let max = back.abs().max(d.abs());
    if (back - d).abs() <= max * f64::EPSILON {
        s
    } else {
        format_g(d, 17)
    }
}

fn print_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=31 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// cJSON_PrintUnformatted (`pretty` false) or cJSON_Print (`pretty` true).
pub fn print(v: &Value, pretty: bool) -> Vec<u8> {
    let mut out = Vec::new();
    print_value(&mut out, v, pretty, 0);
    out
}

fn print_value(out: &mut Vec<u8>, v: &Value, pretty: bool, depth: usize) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(d) => out.extend_from_slice(number_text(*d).as_bytes()),
        Value::String(s) => print_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (k, item) in items.iter().enumerate() {
                print_value(out, item, pretty, depth + 1);
                if k + 1 < items.len() {
                    out.push(b',');
                    if pretty {
                        out.push(b' ');
                    }
                }
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let depth = depth + 1;
            out.push(b'{');
            if pretty {
                out.push(b'\n');
            }
            for (k, (key, value)) in members.iter().enumerate() {
                if pretty {
                    out.extend(std::iter::repeat_n(b'\t', depth));
                }
                print_string(out, key);
                out.push(b':');
                if pretty {
                    out.push(b'\t');
                }
                print_value(out, value, pretty, depth);
                if k + 1 < members.len() {
                    out.push(b',');
                }
                if pretty {
                    out.push(b'\n');
                }
            }
            if pretty {
                out.extend(std::iter::repeat_n(b'\t', depth - 1));
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(input: &str, pretty: bool) -> String {
        let v = parse(input.as_bytes()).unwrap_or_else(|| panic!("parse {input}"));
        String::from_utf8(print(&v, pretty)).unwrap()
    }

    #[test]
    fn reprints_like_cjson() {
        // Seen from Debian's mosquitto_sub -F %J.
        let input = r#"{"e":{},"f":[],"g":[{"h":1},[2,[]]],"i":"\u00e9\n","n":-0.0,"m":1e3, "k":1.5e300,"z":0.1}"#;
        assert_eq!(
            roundtrip(input, false),
            "{\"e\":{},\"f\":[],\"g\":[{\"h\":1},[2,[]]],\"i\":\"é\\n\",\"n\":-0,\"m\":1000,\"k\":1.5e+300,\"z\":0.1}"
        );
        assert_eq!(
            roundtrip(input, true),
            "{\n\t\"e\":\t{\n\t},\n\t\"f\":\t[],\n\t\"g\":\t[{\n\t\t\t\"h\":\t1\n\t\t}, [2, []]],\n\t\"i\":\t\"é\\n\",\n\t\"n\":\t-0,\n\t\"m\":\t1000,\n\t\"k\":\t1.5e+300,\n\t\"z\":\t0.1\n}"
        );
    }

    #[test]
    fn numbers() {
        let cases = [
            (0.1, "0.1"),
            (49.0, "49"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (2.5, "2.5"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            (f64::INFINITY, "null"),
        ];
        for (d, want) in cases {
            assert_eq!(number_text(d), want, "{d}");
        }
        assert_eq!(format_g(100.0, 2), "1e+02");
        assert_eq!(format_g(0.5, 15), "0.5");
    }

    #[test]
    fn parser_accepts_and_refuses_as_cjson() {
        for ok in [
            "  [1 , 2]  ",
            "01",
            "-0.5e-3",
            "\"a\\/b\"",
            "{\"a\":1,\"a\":2}",
            "\u{feff}1",
            "true",
            "1.",
        ] {
            assert!(parse(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "[1,]",
            "{\"a\" 1}",
            "+1",
            "\"\\x\"",
            "\"\\udc00\"",
            "1 2",
            "nul",
            "[1",
            "{'a':1}",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
        // A NUL ends the text cJSON sees: what follows makes the parse fail.
        assert!(parse(b"1\x002").is_none());
        assert_eq!(
            parse(b"\"\\ud83d\\ude00\""),
            Some(Value::String("😀".as_bytes().to_vec()))
        );
    }

    #[test]
    fn string_escapes() {
        let mut out = Vec::new();
        print_string(&mut out, b"bin\x01\x7f\xff\"\\\x08\x0c\t");
        assert_eq!(out, b"\"bin\\u0001\x7f\xff\\\"\\\\\\b\\f\\t\"");
        assert_eq!(Value::c_string(b"a\0b"), Value::String(b"a".to_vec()));
    }
}
