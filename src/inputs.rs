//! A batch's input texts in one buffer: a 1,000-address request decodes
//! into two allocations, not a thousand and one, and its reply reads the
//! inputs back from the same place.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The inputs of one request, as sent, in order.
#[derive(Clone, Default)]
pub struct Inputs {
    text: String,
    ends: Ends,
}

/// Where each input ends in `text`. A request's bytes are bounded by its
/// frame limit, far below 4 GiB.
#[derive(Clone)]
enum Ends {
    /// A single input's, the common call's: no allocation.
    One(u32),
    Many(Vec<u32>),
}

impl Default for Ends {
    fn default() -> Ends {
        Ends::Many(Vec::new())
    }
}

impl Ends {
    #[inline]
    fn as_slice(&self) -> &[u32] {
        match self {
            Ends::One(end) => std::slice::from_ref(end),
            Ends::Many(ends) => ends,
        }
    }
}

impl PartialEq for Inputs {
    fn eq(&self, other: &Inputs) -> bool {
        self.text == other.text && self.ends.as_slice() == other.ends.as_slice()
    }
}

impl Eq for Inputs {}

impl Inputs {
    pub const fn new() -> Inputs {
        Inputs {
            text: String::new(),
            ends: Ends::Many(Vec::new()),
        }
    }

    /// Room for `count` inputs of `bytes` in all, reserved at once.
    pub fn with_capacity(count: usize, bytes: usize) -> Inputs {
        Inputs {
            text: String::with_capacity(bytes),
            ends: Ends::Many(Vec::with_capacity(count)),
        }
    }

    /// Inputs sent as bytes, `ends` where each ends in `bytes`, checked
    /// to be UTF-8 in one pass over the whole (a pass per input cost more
    /// than its address's lookup). An input that is not UTF-8 is kept with
    /// U+FFFD in place of what is not, as `String::from_utf8_lossy` makes it.
    pub fn from_bytes(bytes: Vec<u8>, ends: Vec<u32>) -> Inputs {
        Inputs::checked(bytes, Ends::Many(ends))
    }

    /// [`Inputs::from_bytes`] of a single input, all of `bytes`.
    pub fn one_from_bytes(bytes: Vec<u8>) -> Inputs {
        let end = bytes.len() as u32;
        Inputs::checked(bytes, Ends::One(end))
    }

    fn checked(bytes: Vec<u8>, ends: Ends) -> Inputs {
        match String::from_utf8(bytes) {
            // Valid as a whole and cut only between characters: so is
            // each input.
            Ok(text) if ends.as_slice().iter().all(|&end| text.is_char_boundary(end as usize)) => Inputs { text, ends },
            Ok(text) => Inputs::lossy(text.as_bytes(), ends.as_slice()),
            Err(err) => Inputs::lossy(err.as_bytes(), ends.as_slice()),
        }
    }

    /// Each input of `bytes` on its own, made UTF-8 where it is not.
    fn lossy(bytes: &[u8], ends: &[u32]) -> Inputs {
        let mut inputs = Inputs::with_capacity(ends.len(), bytes.len());
        let mut start = 0;
        for &end in ends {
            inputs.push(&String::from_utf8_lossy(&bytes[start..end as usize]));
            start = end as usize;
        }
        inputs
    }

    pub fn push(&mut self, input: &str) {
        self.text.push_str(input);
        let end = u32::try_from(self.text.len()).expect("a request's inputs fit in 4 GiB");
        match &mut self.ends {
            Ends::Many(ends) => ends.push(end),
            Ends::One(first) => self.ends = Ends::Many(vec![*first, end]),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        let mut start = 0;
        self.ends.as_slice().iter().map(move |&end| {
            let input = &self.text[start..end as usize];
            start = end as usize;
            input
        })
    }
}

impl<S: AsRef<str>> FromIterator<S> for Inputs {
    fn from_iter<I: IntoIterator<Item = S>>(inputs: I) -> Inputs {
        let mut all = Inputs::default();
        for input in inputs {
            all.push(input.as_ref());
        }
        all
    }
}

impl From<Vec<String>> for Inputs {
    fn from(inputs: Vec<String>) -> Inputs {
        inputs.into_iter().collect()
    }
}

impl fmt::Debug for Inputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A list of strings (an HTTP batch's `ips`), each appended as it is
/// read: no `String` per address here either.
impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Inputs, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Inputs;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut list: A) -> Result<Inputs, A::Error> {
                let mut inputs = Inputs::default();
                while list.next_element_seed(Append(&mut inputs))?.is_some() {}
                Ok(inputs)
            }
        }
        deserializer.deserialize_seq(List)
    }
}

/// One string of a list, appended to the inputs.
struct Append<'a>(&'a mut Inputs);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Append<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, input: &str) -> Result<(), E> {
        self.0.push(input);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_come_back_as_pushed_empty_ones_included() {
        let given = ["1.2.3.4", "", "::1", "中国", ""];
        let inputs: Inputs = given.iter().collect();
        assert_eq!(inputs.len(), 5);
        assert_eq!(inputs.iter().collect::<Vec<_>>(), given);
        assert_eq!(format!("{inputs:?}"), format!("{given:?}"));
        assert!(Inputs::default().is_empty());
        // One input read alone is the same, and can be added to.
        let mut one = Inputs::one_from_bytes("中国".into());
        assert_eq!(one, ["中国"].iter().collect());
        one.push("::1");
        assert_eq!(one, ["中国", "::1"].iter().collect());
        assert_eq!(Inputs::one_from_bytes(Vec::new()), [""].iter().collect());
        assert_ne!(Inputs::one_from_bytes(Vec::new()), Inputs::default());
        assert_eq!(Inputs::one_from_bytes(b"\xff".to_vec()), ["\u{fffd}"].iter().collect());
    }

    /// Bytes that are not UTF-8, or whose inputs cut a character that the
    /// whole holds, come back input by input as `from_utf8_lossy` makes
    /// them; UTF-8 comes back as sent.
    #[test]
    fn inputs_from_bytes_are_each_made_utf8_on_their_own() {
        let cases: [&[&[u8]]; 4] = [
            &[b"1.2.3.4", b"", "中国".as_bytes()],
            &[b"1.2.3.4", b"\xff\xfe", b"::1"],
            // "中" is E4 B8 AD: valid as a whole, not as two inputs.
            &[b"a\xe4\xb8", b"\xadb"],
            &[b"\xe4", b"\xb8\xad"],
        ];
        for given in cases {
            let (mut bytes, mut ends) = (Vec::new(), Vec::new());
            for input in given {
                bytes.extend_from_slice(input);
                ends.push(bytes.len() as u32);
            }
            let inputs = Inputs::from_bytes(bytes, ends);
            let expected: Vec<String> = given.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
            assert_eq!(inputs.iter().collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn a_json_list_reads_as_a_vec_of_strings_would() {
        let json = r#"["1.2.3.4", "", "\u4e2d\u56fd", "a\"b"]"#;
        let inputs: Inputs = serde_json::from_str(json).unwrap();
        let strings: Vec<String> = serde_json::from_str(json).unwrap();
        assert_eq!(inputs, Inputs::from(strings));
        for bad in [r#"["1.2.3.4", 5]"#, r#""1.2.3.4""#, r#"[null]"#] {
            let ours = serde_json::from_str::<Inputs>(bad).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Vec<String>>(bad).unwrap_err().to_string();
            assert_eq!(ours, theirs);
        }
    }
}
