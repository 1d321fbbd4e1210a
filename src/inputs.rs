//! A batch's input texts in one buffer: a 1,000-address request decodes
//! into two allocations, not a thousand and one, and its reply reads the
//! inputs back from the same place.

use std::fmt;

/// The inputs of one request, as sent, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    text: String,
    /// Where each input ends in `text`. A request's bytes are bounded by
    /// its frame limit, far below 4 GiB.
    ends: Vec<u32>,
}

impl Inputs {
    pub const fn new() -> Inputs {
        Inputs {
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Room for `count` inputs of `bytes` in all, reserved at once.
    pub fn with_capacity(count: usize, bytes: usize) -> Inputs {
        Inputs {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(count),
        }
    }

    pub fn push(&mut self, input: &str) {
        self.text.push_str(input);
        let end = u32::try_from(self.text.len()).expect("a request's inputs fit in 4 GiB");
        self.ends.push(end);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The inputs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
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
    }
}
