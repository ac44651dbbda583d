//! How one input becomes the next: byte mutations for every target, and structure-aware ones
//! for the JSON part of an input (a value replaced, a key dropped or added, an element
//! repeated), so that mutants of a real config get past the decoder and reach the checks.

use serde_json::{Map, Value};

/// The mutators' random numbers: fastrand's generator, seeded, so the same seed gives the
/// same inputs.
#[derive(Debug, Clone)]
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(fastrand::Rng::with_seed(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n)
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Mutated inputs stay below this size, far above every limit the parsers enforce.
pub const MAX_INPUT: usize = 256 * 1024;

/// Bytes that change a parser's path: quotes, brackets, separators, sign and digit edges.
const INTERESTING_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'9', b'-', b'.', b'/', b'=', b';', b'\n',
    b' ',
];

/// Numbers at the edges of the types the parsers read them into.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "256",
    "4095",
    "4096",
    "65535",
    "65536",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e309",
    "-0",
    "0.5",
    "1e-7",
    "NaN",
];

/// Strings that broke or nearly broke parsers somewhere: multi-byte characters where bytes
/// are counted, separators, paths that climb, names at and over the kernel's limits.
fn interesting_string(rng: &mut Rng) -> String {
    match rng.below(14) {
        0 => String::new(),
        1 => "é".repeat(70),
        2 => "a".repeat(rng.pick(&[15, 16, 63, 64, 255, 256, 4096]).to_owned()),
        3 => "../../etc".into(),
        4 => "\u{0}".into(),
        5 => "eth0".into(),
        6 => "a=b;c".into(),
        7 => " ".into(),
        8 => "😀".repeat(rng.below(40) + 1),
        9 => rng.pick(INTERESTING_NUMBERS).to_string(),
        10 => "10.0.0.0/33".into(),
        11 => "fe80::1%eth0".into(),
        12 => "0a:58:0a:00:00:zz".into(),
        _ => (0..rng.below(24)).map(|_| char::from(b' ' + rng.below(95) as u8)).collect(),
    }
}

fn interesting_value(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 | 1 => Value::String(interesting_string(rng)),
        2 => serde_json::from_str(rng.pick::<&str>(INTERESTING_NUMBERS)).unwrap_or(Value::Null),
        3 => Value::Bool(rng.chance(2)),
        4 => Value::Null,
        5 => Value::Array(vec![]),
        6 => Value::Object(Map::new()),
        _ => Value::Array(vec![Value::String(interesting_string(rng))]),
    }
}

/// One to four mutations of `input`; `others` (the pool) feeds splices and `dictionary`
/// the tokens spliced in.
pub fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], dictionary: &[&[u8]], keys: &[String]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.below(4) + 1 {
        if rng.chance(3) {
            if let Some(mutated) = mutate_json(rng, &out, others, keys) {
                out = mutated;
                continue;
            }
        }
        mutate_bytes(rng, &mut out, others, dictionary);
    }
    out.truncate(MAX_INPUT);
    out
}

/// One or two structure-aware mutations of a JSON `input` (bytes ones if it is not JSON):
/// mutants that still decode, for runs where each case is costly (the black-box runs).
pub fn mutate_structure(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], keys: &[String]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.below(2) + 1 {
        out = match mutate_json(rng, &out, others, keys) {
            Some(mutated) => mutated,
            None => mutate(rng, &out, others, &[], keys),
        };
    }
    out
}

fn range(rng: &mut Rng, len: usize) -> (usize, usize) {
    let start = rng.below(len + 1);
    let end = start + rng.below(len - start + 1).min(if rng.chance(4) { usize::MAX } else { 16 });
    (start, end)
}

fn mutate_bytes(rng: &mut Rng, out: &mut Vec<u8>, others: &[Vec<u8>], dictionary: &[&[u8]]) {
    let len = out.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = rng.below(len);
            out[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            out[at] = *rng.pick(INTERESTING_BYTES);
        }
        2 if !dictionary.is_empty() => {
            let at = rng.below(len + 1);
            out.splice(at..at, rng.pick(dictionary).iter().copied());
        }
        3 => {
            let (start, end) = range(rng, len);
            out.drain(start..end);
        }
        4 => {
            let (start, end) = range(rng, len);
            let copy = out[start..end].to_vec();
            let at = rng.below(out.len() + 1);
            out.splice(at..at, copy);
        }
        5 if !others.is_empty() => {
            let other = rng.pick(others);
            let (start, end) = range(rng, other.len());
            let at = rng.below(len + 1);
            let cut = (at + rng.below(len - at + 1)).min(len);
            out.splice(at..cut, other[start..end].iter().copied());
        }
        6 => out.truncate(rng.below(len + 1)),
        7 => {
            // Oversized: one chunk repeated until the input is large.
            let (start, end) = range(rng, len);
            let chunk = out[start..end].to_vec();
            let times = if chunk.is_empty() { 0 } else { (rng.below(64 * 1024) / chunk.len()).max(2) };
            let at = rng.below(len + 1);
            out.splice(at..at, chunk.iter().copied().cycle().take(chunk.len() * times));
        }
        8 => replace_number(rng, out),
        9 => {
            let at = rng.below(len + 1);
            let text = interesting_string(rng);
            out.splice(at..at, text.into_bytes());
        }
        _ if len >= 2 => {
            // A binary length or count field set to an edge value, either byte order.
            let at = rng.below(len - 1);
            let value: u32 = *rng.pick(&[0, 1, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0xfff0, 0xffff, 0xffff_ffff]);
            let width = if len - at >= 4 && rng.chance(2) { 4 } else { 2 };
            let bytes = if rng.chance(2) { value.to_le_bytes() } else { value.to_be_bytes() };
            out[at..at + width].copy_from_slice(&bytes[4 - width..]);
        }
        _ => out.push(rng.next_u64() as u8),
    }
}

/// A run of ASCII digits replaced by an edge number.
fn replace_number(rng: &mut Rng, out: &mut Vec<u8>) {
    let digits: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_ascii_digit()).collect();
    if digits.is_empty() {
        return;
    }
    let start = *rng.pick(&digits);
    let end = (start..out.len()).find(|&i| !out[i].is_ascii_digit()).unwrap_or(out.len());
    out.splice(start..end, rng.pick(INTERESTING_NUMBERS).bytes());
}

/// Where the JSON of an input starts: after the last NUL (inputs with a header, such as the
/// CNI environment, keep their JSON last), else at the beginning.
pub fn json_start(input: &[u8]) -> usize {
    input.iter().rposition(|&b| b == 0).map_or(0, |at| at + 1)
}

fn mutate_json(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], keys: &[String]) -> Option<Vec<u8>> {
    let start = json_start(input);
    let mut value: Value = serde_json::from_slice(&input[start..]).ok()?;
    let mut nodes = 0;
    count_nodes(&value, &mut nodes);
    let target = rng.below(nodes);
    let donor =
        others.get(rng.below(others.len().max(1))).and_then(|o| serde_json::from_slice::<Value>(&o[json_start(o)..]).ok());
    let mut seen = 0;
    edit_node(&mut value, target, &mut seen, rng, donor.as_ref(), keys);
    let mut out = input[..start].to_vec();
    out.extend(serde_json::to_vec(&value).ok()?);
    Some(out)
}

fn count_nodes(value: &Value, n: &mut usize) {
    *n += 1;
    match value {
        Value::Array(items) => items.iter().for_each(|v| count_nodes(v, n)),
        Value::Object(map) => map.values().for_each(|v| count_nodes(v, n)),
        _ => {}
    }
}

/// Edits the `target`-th node (depth first) of `value`.
fn edit_node(value: &mut Value, target: usize, seen: &mut usize, rng: &mut Rng, donor: Option<&Value>, keys: &[String]) -> bool {
    if *seen == target {
        edit_here(value, rng, donor, keys);
        return true;
    }
    *seen += 1;
    match value {
        Value::Array(items) => items.iter_mut().any(|v| edit_node(v, target, seen, rng, donor, keys)),
        Value::Object(map) => map.values_mut().any(|v| edit_node(v, target, seen, rng, donor, keys)),
        _ => false,
    }
}

fn edit_here(value: &mut Value, rng: &mut Rng, donor: Option<&Value>, keys: &[String]) {
    match (rng.below(6), &mut *value) {
        (0, Value::Object(map)) if !map.is_empty() => {
            let key = map.keys().nth(rng.below(map.len())).cloned().unwrap_or_default();
            map.remove(&key);
        }
        (1, Value::Object(map)) if !keys.is_empty() => {
            map.insert(rng.pick(keys).clone(), interesting_value(rng));
        }
        (0 | 1, Value::Array(items)) if !items.is_empty() => {
            let at = rng.below(items.len());
            if rng.chance(2) {
                items.remove(at);
            } else {
                let copy = items[at].clone();
                let times = *rng.pick(&[1, 2, 100, 5000]);
                items.extend(std::iter::repeat_n(copy, times));
            }
        }
        (2, _) => {
            if let Some(donor) = donor {
                let mut n = 0;
                count_nodes(donor, &mut n);
                if let Some(part) = nth_node(donor, rng.below(n), &mut 0) {
                    *value = part.clone();
                }
            }
        }
        _ => *value = interesting_value(rng),
    }
}

fn nth_node<'a>(value: &'a Value, target: usize, seen: &mut usize) -> Option<&'a Value> {
    if *seen == target {
        return Some(value);
    }
    *seen += 1;
    match value {
        Value::Array(items) => items.iter().find_map(|v| nth_node(v, target, seen)),
        Value::Object(map) => map.values().find_map(|v| nth_node(v, target, seen)),
        _ => None,
    }
}

/// Every object key in `seeds`' JSON, for the mutator to add where it does not belong.
pub fn object_keys(seeds: &[Vec<u8>]) -> Vec<String> {
    fn walk(value: &Value, keys: &mut Vec<String>) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| walk(v, keys)),
            Value::Object(map) => {
                keys.extend(map.keys().cloned());
                map.values().for_each(|v| walk(v, keys));
            }
            _ => {}
        }
    }
    let mut keys = Vec::new();
    for seed in seeds {
        if let Ok(value) = serde_json::from_slice::<Value>(&seed[json_start(seed)..]) {
            walk(&value, &mut keys);
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutants() {
        let seed = br#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.0.0.0/24"}}"#.to_vec();
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..200).map(|_| mutate(&mut rng, &seed, std::slice::from_ref(&seed), &[b"null"], &["x".into()])).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn json_mutation_keeps_the_header_before_the_last_nul() {
        let input = b"CNI_COMMAND=ADD\n\0{\"a\":[1,2]}".to_vec();
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let out = mutate_json(&mut rng, &input, &[], &[]).expect("valid JSON mutates");
            assert!(out.starts_with(b"CNI_COMMAND=ADD\n\0"));
            assert!(serde_json::from_slice::<Value>(&out[json_start(&out)..]).is_ok());
        }
    }
}
