//! How midge_sub and midge_rr print a message: payload only, `-v`
//! (`topic payload`), or `-F format` with every `%`, `@` and `\` sequence of
//! mosquitto_sub, including its quirks (a field width truncates `%p`, `%x`
//! with a width prints half as many bytes, `%-p` pads with the payload's
//! length), so that output compares byte for byte.
//!
//! Rendering is pure: it returns the bytes for stdout and the error lines
//! for stderr; time comes from a [`Clock`] so tests fix it.

use midge_codec::properties as p;
use midge_codec::Properties;

use super::clock::Clock;
use super::json::{self, Value};
use super::props::property_name;

/// A received message, as the printer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    /// The packet identifier (0 for QoS 0).
    pub mid: u16,
    pub props: &'a Properties,
    /// Property identifiers in the order they came on the wire (a repeated
    /// property repeats); empty when unknown.
    pub prop_order: &'a [u8],
}

/// The output options that matter to printing.
#[derive(Debug, Clone, Default)]
pub struct PrintOpts {
    pub format: Option<Vec<u8>>,
    pub verbose: bool,
    pub eol: bool,
    pub pretty: bool,
}

/// What printing one message produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Printed {
    pub stdout: Vec<u8>,
    pub stderr: Vec<String>,
}

/// Checks a `-F` string when it is given, as mosquitto does.
pub fn check_format(f: &[u8]) -> Result<(), String> {
    const INCOMPLETE: &str = "Error: Incomplete format specifier.\n";
    let len = f.len();
    let mut i = 0;
    while i < len {
        match f[i] {
            b'%' => {
                if i == len - 1 {
                    return Err(INCOMPLETE.into());
                }
                if f[i + 1] == b'0' || f[i + 1] == b'-' {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                }
                while f[i + 1].is_ascii_digit() {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                }
                if f[i + 1] == b'.' {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                    while f[i + 1].is_ascii_digit() {
                        i += 1;
                        if i == len - 1 {
                            return Err(INCOMPLETE.into());
                        }
                    }
                }
                let c = f[i + 1];
                if !b"%ACDEFIjJlmPpqRrStUxX".contains(&c) {
                    return Err(format!(
                        "Error: Invalid format specifier '{}'.\n",
                        c as char
                    ));
                }
                i += 1;
            }
            b'@' => {
                if i == len - 1 {
                    return Err(INCOMPLETE.into());
                }
                i += 1;
            }
            b'\\' => {
                if i == len - 1 {
                    return Err("Error: Incomplete escape specifier.\n".into());
                }
                let c = f[i + 1];
                if !b"\\0aenrtv".contains(&c) {
                    return Err(format!(
                        "Error: Invalid escape specifier '{}'.\n",
                        c as char
                    ));
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Prints one message the way mosquitto_sub's print_message does.
pub fn print_message(opts: &PrintOpts, msg: &Msg, clock: &dyn Clock) -> Printed {
    let mut out = Printed::default();
    if let Some(f) = &opts.format {
        formatted(&mut out, f, opts, msg, clock);
    } else if opts.verbose {
        if !msg.payload.is_empty() {
            out.stdout.extend_from_slice(msg.topic.as_bytes());
            out.stdout.push(b' ');
            out.stdout.extend_from_slice(msg.payload);
            if opts.eol {
                out.stdout.push(b'\n');
            }
        } else if opts.eol {
            out.stdout.extend_from_slice(msg.topic.as_bytes());
            out.stdout.extend_from_slice(b" (null)\n");
        }
    } else if !msg.payload.is_empty() {
        out.stdout.extend_from_slice(msg.payload);
        if opts.eol {
            out.stdout.push(b'\n');
        }
    }
    out
}

#[derive(Clone, Copy)]
struct Spec {
    left: bool,
    pad: u8,
    width: usize,
    precision: Option<usize>,
}

fn formatted(out: &mut Printed, f: &[u8], opts: &PrintOpts, msg: &Msg, clock: &dyn Clock) {
    let len = f.len();
    let mut i = 0;
    while i < len {
        match f[i] {
            b'%' => {
                let mut spec = Spec {
                    left: false,
                    pad: b' ',
                    width: 0,
                    precision: None,
                };
                if i < len - 1 {
                    i += 1;
                    if f[i] == b'-' {
                        spec.left = true;
                        if i < len - 1 {
                            i += 1;
                        }
                    }
                    if f[i] == b'0' {
                        spec.pad = b'0';
                        if i < len - 1 {
                            i += 1;
                        }
                    }
                    while i < len - 1 && f[i].is_ascii_digit() {
                        spec.width = spec
                            .width
                            .saturating_mul(10)
                            .saturating_add(usize::from(f[i] - b'0'));
                        i += 1;
                    }
                    if f[i] == b'.' && i < len - 1 {
                        i += 1;
                        let mut prec = 0usize;
                        while i < len - 1 && f[i].is_ascii_digit() {
                            prec = prec
                                .saturating_mul(10)
                                .saturating_add(usize::from(f[i] - b'0'));
                            i += 1;
                        }
                        spec.precision = Some(prec);
                    }
                    if i < len {
                        percent(out, f[i], spec, opts, msg, clock);
                    }
                }
            }
            b'@' => {
                if i < len - 1 {
                    i += 1;
                    if f[i] == b'@' {
                        out.stdout.push(b'@');
                    } else if f[i] == b'N' {
                        out.stdout
                            .extend_from_slice(format!("{:09}", clock.nanos()).as_bytes());
                    } else {
                        let code = format!("%{}", f[i] as char);
                        out.stdout.extend_from_slice(&clock.strftime(&code));
                    }
                }
            }
            b'\\' => {
                if i < len - 1 {
                    i += 1;
                    let c = match f[i] {
                        b'\\' => Some(b'\\'),
                        b'0' => Some(0),
                        b'a' => Some(7),
                        b'e' => Some(0x1b),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'v' => Some(0x0b),
                        _ => None,
                    };
                    out.stdout.extend(c);
                }
            }
            c => out.stdout.push(c),
        }
        i += 1;
    }
    if opts.eol {
        out.stdout.push(b'\n');
    }
}

fn blank(out: &mut Vec<u8>, pad: u8, width: usize) {
    out.extend(std::iter::repeat_n(pad, width));
}

/// printf's `%d` with `-`, `0` and a width.
fn int(out: &mut Vec<u8>, v: i64, s: Spec) {
    let text = if s.width == 0 {
        v.to_string()
    } else if s.left {
        format!("{:<w$}", v, w = s.width)
    } else if s.pad == b'0' {
        format!("{:0w$}", v, w = s.width)
    } else {
        format!("{:>w$}", v, w = s.width)
    };
    out.extend_from_slice(text.as_bytes());
}

/// printf's `%s` with `-`, width and precision, counted in bytes.
fn string(out: &mut Vec<u8>, v: &[u8], s: Spec) {
    let v = match s.precision {
        Some(p) if p < v.len() => &v[..p],
        _ => v,
    };
    let pad = s.width.saturating_sub(v.len());
    if !s.left {
        blank(out, b' ', pad);
    }
    out.extend_from_slice(v);
    if s.left {
        blank(out, b' ', pad);
    }
}

/// mosquitto_sub's write_payload, quirks included: a width truncates the
/// payload; with hex the truncated length is halved; `-` pads by the
/// (negative) difference's absolute value, as printf("%*s", -n, "") does.
fn payload(out: &mut Vec<u8>, data: &[u8], hex: u8, s: Spec) {
    let width = s.width as i64;
    let mut n = data.len() as i64;
    let padlen;
    if width > 0 {
        if n > width {
            n = width;
        }
        if hex > 0 {
            n /= 2;
            padlen = width - n * 2;
        } else {
            padlen = width - n;
        }
    } else {
        padlen = width - n;
    }
    if !s.left && padlen > 0 {
        blank(out, s.pad, padlen as usize);
    }
    let shown = &data[..n.max(0) as usize];
    match hex {
        0 => out.extend_from_slice(shown),
        1 => shown
            .iter()
            .for_each(|b| out.extend_from_slice(format!("{b:02x}").as_bytes())),
        _ => shown
            .iter()
            .for_each(|b| out.extend_from_slice(format!("{b:02X}").as_bytes())),
    }
    if s.left {
        blank(out, b' ', padlen.unsigned_abs() as usize);
    }
}

fn percent(out: &mut Printed, code: u8, s: Spec, opts: &PrintOpts, msg: &Msg, clock: &dyn Clock) {
    let props = msg.props;
    let o = &mut out.stdout;
    match code {
        b'%' => o.push(b'%'),
        b'A' => match props.topic_alias {
            Some(v) => int(o, i64::from(v), s),
            None => blank(o, s.pad, s.width),
        },
        b'C' => match &props.content_type {
            Some(v) => string(o, v.as_bytes(), s),
            None => blank(o, b' ', s.width),
        },
        b'D' => {
            if let Some(v) = &props.correlation_data {
                o.extend_from_slice(v);
            }
        }
        b'E' => match props.message_expiry_interval {
            // C prints it through an int.
            Some(v) => int(o, i64::from(v as i32), s),
            None => blank(o, s.pad, s.width),
        },
        b'F' => match props.payload_format_indicator {
            Some(v) => int(o, i64::from(v), s),
            None => blank(o, s.pad, s.width),
        },
        b'I' => {
            let t = clock.strftime("%FT%T%z");
            if t.is_empty() {
                blank(o, b' ', s.width);
            } else {
                string(o, &t, s);
            }
        }
        b'j' => {
            let v = json_message(msg, clock, Some(payload_string(msg.payload)));
            o.extend_from_slice(&json::print(&v, opts.pretty));
        }
        b'J' => {
            let parsed = if msg.payload.is_empty() {
                Some(Value::Null)
            } else {
                json::parse(msg.payload)
            };
            match parsed {
                Some(pv) => {
                    let v = json_message(msg, clock, Some(pv));
                    o.extend_from_slice(&json::print(&v, opts.pretty));
                }
                None => out.stderr.push(format!(
                    "Error: Message payload is not valid JSON on topic {}.\n",
                    msg.topic
                )),
            }
        }
        b'l' => int(o, msg.payload.len() as i64, s),
        b'm' => int(o, i64::from(msg.mid), s),
        b'P' => {
            for (k, (name, value)) in props.user_properties.iter().enumerate() {
                if k > 0 {
                    o.push(b' ');
                }
                o.extend_from_slice(name.as_bytes());
                o.push(b':');
                o.extend_from_slice(value.as_bytes());
            }
        }
        b'p' => payload(o, msg.payload, 0, s),
        b'q' => o.push(b'0' + msg.qos),
        b'R' => {
            if let Some(v) = &props.response_topic {
                string(o, v.as_bytes(), s);
            }
        }
        b'r' => o.push(if msg.retain { b'1' } else { b'0' }),
        b'S' => match props.subscription_identifiers.first() {
            Some(v) => int(o, i64::from(*v as i32), s),
            None => blank(o, s.pad, s.width),
        },
        b't' => string(o, msg.topic.as_bytes(), s),
        b'U' => {
            let secs = clock.strftime("%s");
            if !secs.is_empty() {
                o.extend_from_slice(&secs);
                o.extend_from_slice(format!(".{:09}", clock.nanos()).as_bytes());
            }
        }
        b'x' => payload(o, msg.payload, 1, s),
        b'X' => payload(o, msg.payload, 2, s),
        _ => {}
    }
}

/// `%j`'s payload: a string (cut at a NUL, as C sees it), or null when empty.
fn payload_string(data: &[u8]) -> Value {
    if data.is_empty() {
        Value::Null
    } else {
        Value::c_string(data)
    }
}

/// mosquitto_sub's JSON timestamp: local time, microseconds, then a literal
/// `Z` *and* the offset (`2020-05-06T21:48:00.123456Z+0100`), as it prints.
pub fn json_timestamp(clock: &dyn Clock) -> Vec<u8> {
    let mut t = clock.strftime("%Y-%m-%dT%H:%M:%S");
    t.extend_from_slice(format!(".{:06}Z", clock.nanos() / 1000).as_bytes());
    t.extend_from_slice(&clock.strftime("%z"));
    t
}

/// The default order of properties when the wire order is unknown.
const DEFAULT_ORDER: &[u8] = &[
    p::PAYLOAD_FORMAT_INDICATOR,
    p::MESSAGE_EXPIRY_INTERVAL,
    p::CONTENT_TYPE,
    p::RESPONSE_TOPIC,
    p::CORRELATION_DATA,
    p::SUBSCRIPTION_IDENTIFIER,
    p::TOPIC_ALIAS,
    p::USER_PROPERTY,
];

fn properties_json(props: &Properties, order: &[u8]) -> Value {
    let mut members: Vec<(Vec<u8>, Value)> = Vec::new();
    let mut user: Option<usize> = None;
    let mut next_user = 0;
    let mut next_subid = 0;
    let expanded: Vec<u8>;
    let order = if order.is_empty() {
        let mut v = Vec::new();
        for id in DEFAULT_ORDER {
            let n = match *id {
                p::USER_PROPERTY => props.user_properties.len(),
                p::SUBSCRIPTION_IDENTIFIER => props.subscription_identifiers.len(),
                _ => 1,
            };
            v.extend(std::iter::repeat_n(*id, n));
        }
        expanded = v;
        &expanded[..]
    } else {
        order
    };
    let name = |id: u8| property_name(id).unwrap_or("unknown").as_bytes().to_vec();
    for &id in order {
        let v = match id {
            p::PAYLOAD_FORMAT_INDICATOR => props
                .payload_format_indicator
                .map(|v| Value::Number(f64::from(v))),
            p::MESSAGE_EXPIRY_INTERVAL => props
                .message_expiry_interval
                .map(|v| Value::Number(f64::from(v))),
            p::CONTENT_TYPE => props
                .content_type
                .as_ref()
                .map(|v| Value::c_string(v.as_bytes())),
            p::RESPONSE_TOPIC => props
                .response_topic
                .as_ref()
                .map(|v| Value::c_string(v.as_bytes())),
            p::CORRELATION_DATA => props.correlation_data.as_ref().map(|v| Value::c_string(v)),
            p::TOPIC_ALIAS => props.topic_alias.map(|v| Value::Number(f64::from(v))),
            p::SUBSCRIPTION_IDENTIFIER => {
                let v = props
                    .subscription_identifiers
                    .get(next_subid)
                    .map(|v| Value::Number(f64::from(*v)));
                next_subid += 1;
                v
            }
            p::USER_PROPERTY => {
                if let Some((k, v)) = props.user_properties.get(next_user) {
                    let idx = *user.get_or_insert_with(|| {
                        members.push((b"user-properties".to_vec(), Value::Object(Vec::new())));
                        members.len() - 1
                    });
                    if let Some((_, Value::Object(m))) = members.get_mut(idx) {
                        m.push((k.as_bytes().to_vec(), Value::c_string(v.as_bytes())));
                    }
                }
                next_user += 1;
                None
            }
            _ => None,
        };
        if let Some(v) = v {
            members.push((name(id), v));
        }
    }
    Value::Object(members)
}

fn json_message(msg: &Msg, clock: &dyn Clock, payload: Option<Value>) -> Value {
    let mut m: Vec<(Vec<u8>, Value)> = vec![
        (b"tst".to_vec(), Value::String(json_timestamp(clock))),
        (b"topic".to_vec(), Value::c_string(msg.topic.as_bytes())),
        (b"qos".to_vec(), Value::Number(f64::from(msg.qos))),
        (
            b"retain".to_vec(),
            Value::Number(if msg.retain { 1.0 } else { 0.0 }),
        ),
        (
            b"payloadlen".to_vec(),
            Value::Number(msg.payload.len() as f64),
        ),
    ];
    if msg.qos > 0 {
        m.push((b"mid".to_vec(), Value::Number(f64::from(msg.mid))));
    }
    if !msg.props.is_empty() {
        m.push((
            b"properties".to_vec(),
            properties_json(msg.props, msg.prop_order),
        ));
    }
    m.push((b"payload".to_vec(), payload.unwrap_or(Value::Null)));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Clock for Fixed {
        fn strftime(&self, fmt: &str) -> Vec<u8> {
            match fmt {
                "%Y-%m-%dT%H:%M:%S" => b"2020-05-06T21:48:00".to_vec(),
                "%z" => b"+0100".to_vec(),
                "%FT%T%z" => b"2020-05-06T21:48:00+0100".to_vec(),
                "%s" => b"1588797680".to_vec(),
                "%H" => b"21".to_vec(),
                _ => b"?".to_vec(),
            }
        }
        fn nanos(&self) -> u32 {
            123_456_789
        }
    }

    fn msg<'a>(topic: &'a str, payload: &'a [u8], props: &'a Properties) -> Msg<'a> {
        Msg {
            topic,
            payload,
            qos: 1,
            retain: true,
            mid: 7,
            props,
            prop_order: &[],
        }
    }

    fn render(fmt: &str, m: &Msg) -> (String, Vec<String>) {
        let opts = PrintOpts {
            format: Some(fmt.as_bytes().to_vec()),
            verbose: false,
            eol: true,
            pretty: false,
        };
        assert_eq!(check_format(fmt.as_bytes()), Ok(()), "{fmt}");
        let p = print_message(&opts, m, &Fixed);
        (String::from_utf8_lossy(&p.stdout).into_owned(), p.stderr)
    }

    #[test]
    fn format_table() {
        let none = Properties::default();
        let m = msg("j/1", b"hello", &none);
        let cases = [
            ("%t %p", "j/1 hello\n"),
            ("%q%r %l %m", "11 5 7\n"),
            ("%x|%X", "68656c6c6f|68656C6C6F\n"),
            // Observed with Debian's mosquitto_sub 2.0.11.
            (
                "%10t|%-10t|%5.2t|%08l|%-8l|%.2t",
                "       j/1|j/1       |   j/|00000005|5       |j/\n",
            ),
            ("%3p|%-6p|%6x|%7x", "hel|hello |  6865|   6865\n"),
            ("%%|\\t\\\\\\e\\a\\v\\r\\0|@@", "%|\t\\\x1b\x07\x0b\r\0|@\n"),
            ("%A%C%D%E%F%P%R%S|%5E|", "|     |\n"),
            (
                "%I|@H|@N|%U",
                "2020-05-06T21:48:00+0100|21|123456789|1588797680.123456789\n",
            ),
            ("%-p", "hello     \n"),
            ("plain", "plain\n"),
        ];
        for (f, want) in cases {
            assert_eq!(render(f, &m).0, want, "{f}");
        }
    }

    #[test]
    fn properties_in_format_and_json() {
        let props = Properties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k1".into(), "v1".into()), ("k2".into(), "v2".into())],
            correlation_data: Some(bytes::Bytes::from_static(b"cd")),
            response_topic: Some("rt".into()),
            message_expiry_interval: Some(100),
            payload_format_indicator: Some(1),
            subscription_identifiers: vec![42],
            ..Properties::default()
        };
        let mut m = msg("j/5", b"x", &props);
        m.qos = 0;
        m.mid = 0;
        assert_eq!(
            render("%C|%D|%E|%F|%P|%R|%S|%5E|%-5F|%05S", &m).0,
            "text/plain|cd|100|1|k1:v1 k2:v2|rt|42|  100|1    |00042\n"
        );
        // The wire order Debian's mosquitto broker uses, as its mosquitto_sub printed it.
        let order = [
            p::SUBSCRIPTION_IDENTIFIER,
            p::CONTENT_TYPE,
            p::USER_PROPERTY,
            p::USER_PROPERTY,
            p::CORRELATION_DATA,
            p::RESPONSE_TOPIC,
            p::PAYLOAD_FORMAT_INDICATOR,
            p::MESSAGE_EXPIRY_INTERVAL,
        ];
        m.prop_order = &order;
        assert_eq!(
            render("%j", &m).0,
            "{\"tst\":\"2020-05-06T21:48:00.123456Z+0100\",\"topic\":\"j/5\",\"qos\":0,\"retain\":1,\"payloadlen\":1,\"properties\":{\"subscription-identifier\":42,\"content-type\":\"text/plain\",\"user-properties\":{\"k1\":\"v1\",\"k2\":\"v2\"},\"correlation-data\":\"cd\",\"response-topic\":\"rt\",\"payload-format-indicator\":1,\"message-expiry-interval\":100},\"payload\":\"x\"}\n"
        );
    }

    #[test]
    fn json_outputs() {
        let none = Properties::default();
        let m = msg("j/3", b"plain \"q\" \\ x", &none);
        assert_eq!(
            render("%j", &m).0,
            "{\"tst\":\"2020-05-06T21:48:00.123456Z+0100\",\"topic\":\"j/3\",\"qos\":1,\"retain\":1,\"payloadlen\":13,\"mid\":7,\"payload\":\"plain \\\"q\\\" \\\\ x\"}\n"
        );
        let (out, err) = render("%J|", &m);
        assert_eq!(out, "|\n");
        assert_eq!(
            err,
            vec!["Error: Message payload is not valid JSON on topic j/3.\n"]
        );
        let m = msg("j/1", b"{\"a\": [1, 2.5]}", &none);
        assert_eq!(
            render("%J", &m).0,
            "{\"tst\":\"2020-05-06T21:48:00.123456Z+0100\",\"topic\":\"j/1\",\"qos\":1,\"retain\":1,\"payloadlen\":15,\"mid\":7,\"payload\":{\"a\":[1,2.5]}}\n"
        );
        let empty = msg("n/1", b"", &none);
        assert!(render("%j", &empty).0.ends_with("\"payload\":null}\n"));
        assert!(render("%J", &empty).0.ends_with("\"payload\":null}\n"));
        let opts = PrintOpts {
            format: Some(b"%j".to_vec()),
            verbose: false,
            eol: true,
            pretty: true,
        };
        let p = print_message(&opts, &m, &Fixed);
        assert_eq!(
            String::from_utf8(p.stdout).unwrap(),
            "{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0100\",\n\t\"topic\":\t\"j/1\",\n\t\"qos\":\t1,\n\t\"retain\":\t1,\n\t\"payloadlen\":\t15,\n\t\"mid\":\t7,\n\t\"payload\":\t\"{\\\"a\\\": [1, 2.5]}\"\n}\n"
        );
    }

    #[test]
    fn plain_and_verbose() {
        let none = Properties::default();
        let m = msg("a/b", b"hi", &none);
        let empty = msg("a/c", b"", &none);
        let run = |verbose: bool, eol: bool, m: &Msg| {
            let opts = PrintOpts {
                format: None,
                verbose,
                eol,
                pretty: false,
            };
            print_message(&opts, m, &Fixed).stdout
        };
        assert_eq!(run(false, true, &m), b"hi\n");
        assert_eq!(run(true, true, &m), b"a/b hi\n");
        assert_eq!(run(true, false, &m), b"a/b hi");
        assert_eq!(run(true, true, &empty), b"a/c (null)\n");
        assert_eq!(run(true, false, &empty), b"");
        assert_eq!(run(false, true, &empty), b"");
    }

    #[test]
    fn format_checks() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("%t %p @H \\n", Ok(())),
            ("%-08.3t", Ok(())),
            ("%", Err("Error: Incomplete format specifier.\n")),
            ("%-", Err("Error: Incomplete format specifier.\n")),
            ("%5", Err("Error: Incomplete format specifier.\n")),
            ("@", Err("Error: Incomplete format specifier.\n")),
            ("\\", Err("Error: Incomplete escape specifier.\n")),
            ("%z", Err("Error: Invalid format specifier 'z'.\n")),
            ("\\q", Err("Error: Invalid escape specifier 'q'.\n")),
        ];
        for (f, want) in cases {
            assert_eq!(
                check_format(f.as_bytes()),
                want.map_err(|e| e.to_string()),
                "{f}"
            );
        }
    }
}
