//! Wildcard patterns as AWS policies write them: `*` matches any run of characters
//! (including none, `/` and `:`), `?` exactly one character, everything else itself.
//!
//! One matcher for every place that matches such patterns (the proxy's secondary
//! authorization rules, the front end's key policies), compiled once and matched in time
//! linear in the value for each segment: no backtracking, so a hostile pattern such as
//! `a*a*a*…b` against a long value cannot blow up.

use std::fmt;

/// A compiled wildcard pattern: `*` any run of characters, `?` one character.
///
/// Split at `*` into segments: the first is anchored at the start, the last (if there was
/// a `*`) at the end, and the middle ones are found left to right, each at its leftmost
/// place; leftmost placement is optimal, so there is no backtracking.
pub struct Wildcard {
    text: String,
    head: Vec<Tok>,
    middle: Vec<Vec<Tok>>,
    /// `None` when the pattern has no `*`: `head` must then match the whole value.
    tail: Option<Vec<Tok>>,
    /// Compiled lower-case; values are lower-cased before matching.
    ignore_ascii_case: bool,
}

#[derive(Debug)]
enum Tok {
    Lit(Box<str>),
    One,
}

impl fmt::Debug for Wildcard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wildcard({:?})", self.text)
    }
}

impl Wildcard {
    /// Compiles `text`, matched case-sensitively (ARNs, key ids).
    pub fn compile(text: &str) -> Self {
        let mut segments: Vec<Vec<Tok>> = text.split('*').map(tokens).collect();
        let tail = if segments.len() > 1 {
            segments.pop()
        } else {
            None
        };
        let mut segments = segments.into_iter();
        let head = segments.next().unwrap_or_default();
        let middle = segments.filter(|s| !s.is_empty()).collect();
        Self {
            text: text.to_owned(),
            head,
            middle,
            tail,
            ignore_ascii_case: false,
        }
    }

    /// Compiles `text` for matching that ignores ASCII case (IAM action names such as
    /// `kms:Put*`).
    pub fn compile_ignore_ascii_case(text: &str) -> Self {
        let mut p = Self::compile(&text.to_ascii_lowercase());
        p.ignore_ascii_case = true;
        p
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `value` matches the whole pattern.
    pub fn matches(&self, value: &str) -> bool {
        if self.ignore_ascii_case && value.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.matches_exact(&value.to_ascii_lowercase());
        }
        self.matches_exact(value)
    }

    fn matches_exact(&self, value: &str) -> bool {
        let Some(start) = match_prefix(&self.head, value) else {
            return false;
        };
        let Some(tail) = &self.tail else {
            return start == value.len();
        };
        let mut rest = &value[start..];
        let Some(end) = match_suffix(tail, rest) else {
            return false;
        };
        rest = &rest[..end];
        for seg in &self.middle {
            match find_segment(seg, rest) {
                Some(after) => rest = &rest[after..],
                None => return false,
            }
        }
        true
    }
}

fn tokens(segment: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    for (i, part) in segment.split('?').enumerate() {
        if i > 0 {
            toks.push(Tok::One);
        }
        if !part.is_empty() {
            toks.push(Tok::Lit(part.into()));
        }
    }
    toks
}

/// Matches `seg` at the start of `s`; returns the bytes consumed.
fn match_prefix(seg: &[Tok], s: &str) -> Option<usize> {
    let mut i = 0;
    for tok in seg {
        match tok {
            Tok::Lit(lit) if s[i..].starts_with(&**lit) => i += lit.len(),
            Tok::Lit(_) => return None,
            Tok::One => i += s[i..].chars().next()?.len_utf8(),
        }
    }
    Some(i)
}

/// Matches `seg` at the end of `s`; returns where the match starts.
fn match_suffix(seg: &[Tok], s: &str) -> Option<usize> {
    let mut j = s.len();
    for tok in seg.iter().rev() {
        match tok {
            Tok::Lit(lit) if s[..j].ends_with(&**lit) => j -= lit.len(),
            Tok::Lit(_) => return None,
            Tok::One => j -= s[..j].chars().next_back()?.len_utf8(),
        }
    }
    Some(j)
}

/// Finds the leftmost match of a non-empty `seg` in `s`; returns where it ends.
fn find_segment(seg: &[Tok], s: &str) -> Option<usize> {
    let mut start = 0;
    loop {
        if let Some(Tok::Lit(lit)) = seg.first() {
            start += s[start..].find(&**lit)?;
        }
        if let Some(len) = match_prefix(seg, &s[start..]) {
            return Some(start + len);
        }
        start += s[start..].chars().next()?.len_utf8();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &str) -> bool {
        Wildcard::compile(pattern).matches(value)
    }

    #[test]
    fn wildcard_edge_cases() {
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("*", ""));
        assert!(m("*", "arn:aws:iam::1:role/a/b"));
        assert!(m("**", ""));
        assert!(m("a**b", "ab"));
        assert!(!m("?", ""));
        assert!(m("?", "é"));
        assert!(!m("?", "ab"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("abc", "abc"));
        assert!(!m("abc", "ABC"));
        assert!(!m("abc", "abcd"));
        assert!(m("*:role/*", "arn:aws:iam::1:role/x"));
        assert!(m("a*a", "aa"));
        assert!(!m("a*a", "a"));
        assert!(!m("ab*ba", "aba"));
        assert!(m("*?", "x"));
        assert!(!m("*?", ""));
        assert!(m("*a?b*", "xxaéb"));
        assert!(m("é*?", "éé"));
        assert!(m("*b*b*", "abab"));
        assert!(!m("*b*b*", "ab"));
        assert!(m(
            "arn:aws:iam::*:role/app-*",
            "arn:aws:iam::111122223333:role/app-web"
        ));
    }

    #[test]
    fn wildcard_has_no_blowup() {
        let value = "a".repeat(10_000);
        let start = std::time::Instant::now();
        assert!(!m("a*a*a*a*a*a*a*a*a*a*b", &value));
        assert!(!m("*?*?*?*?*?*?*?*?*b", &value));
        assert!(m("a*a*a*a*a*a*a*a*a*a", &value));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    /// A straightforward reference matcher (exponential, fine for tiny inputs).
    fn reference(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && reference(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }

    fn all_strings(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..max_len {
            level = level
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            out.extend(level.iter().cloned());
        }
        out
    }

    #[test]
    fn wildcard_agrees_with_reference_exhaustively() {
        let patterns = all_strings(&['a', 'b', '*', '?'], 5);
        let values = all_strings(&['a', 'b'], 6);
        for p in &patterns {
            let compiled = Wildcard::compile(p);
            let pc: Vec<char> = p.chars().collect();
            for v in &values {
                let vc: Vec<char> = v.chars().collect();
                assert_eq!(
                    compiled.matches(v),
                    reference(&pc, &vc),
                    "pattern {p:?} value {v:?}"
                );
            }
        }
    }

    #[test]
    fn ignoring_ascii_case() {
        let p = Wildcard::compile_ignore_ascii_case("KMS:Put*");
        assert!(p.matches("kms:PutKeyPolicy"));
        assert!(p.matches("KMS:PUTKEYPOLICY"));
        assert!(!p.matches("kms:GetKeyPolicy"));
        assert!(!Wildcard::compile("KMS:Put*").matches("kms:PutKeyPolicy"));
        assert_eq!(p.as_str(), "kms:put*");
    }
}
