//! GPT-2 style byte-level BPE, built from a GGUF file's own vocabulary and merges
//! (`tokenizer.ggml.model = "gpt2"`), with the SmolLM2 pre-tokenizer (`tokenizer.ggml.pre =
//! "smollm"`): every digit is a piece of its own, the rest is split by the GPT-2 regex.
//!
//! Encoding, in order:
//! 1. control tokens (token type 3, e.g. `<|im_start|>`) written literally in the text are
//!    matched first, longest first, and become their own ids;
//! 2. the text between them is split into pieces: each numeric character alone, the rest by
//!    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
//! 3. each piece's UTF-8 bytes become GPT-2's printable byte characters, and merges are applied
//!    lowest rank first (all occurrences of the best pair, left to right, then again) until none
//!    applies; the resulting symbols are vocabulary entries.
//!
//! This is what Hugging Face `tokenizers` does for SmolLM2's `tokenizer.json`
//! (`Digits(individual_digits)` then `ByteLevel(add_prefix_space = false)`, BPE); the tests
//! hold ids produced by it.

use std::collections::HashMap;

/// Token type of control tokens in `tokenizer.ggml.token_type` (llama.cpp's `CONTROL`).
pub const TOKEN_TYPE_CONTROL: i32 = 3;

/// The GPT-2 pattern, as Hugging Face's `ByteLevel` pre-tokenizer uses it.
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: {0}")]
    Invalid(String),
}

/// A byte-level BPE tokenizer.
pub struct Tokenizer {
    /// Token strings in GPT-2's byte-character form, by id.
    tokens: Vec<String>,
    /// Whether each id is a control token (its text is never produced by decoding).
    control: Vec<bool>,
    /// Id of each token string.
    ids: HashMap<String, u32>,
    /// `(left, right)` → `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Id of the one-character token of each byte (byte-level vocabularies may lack a few
    /// control bytes; such bytes are dropped when encoding, as Hugging Face's BPE without an
    /// unknown token does).
    byte_ids: [Option<u32>; 256],
    /// Byte of each of GPT-2's byte characters.
    char_bytes: HashMap<char, u8>,
    /// Control tokens, longest first.
    specials: Vec<(String, u32)>,
    regex: fancy_regex::Regex,
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        out[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).expect("valid code point");
            n += 1;
            c
        };
    }
    out
}

impl Tokenizer {
    /// Builds the tokenizer from the vocabulary (`tokenizer.ggml.tokens`), the token types
    /// (`tokenizer.ggml.token_type`, may be empty) and the merges (`tokenizer.ggml.merges`,
    /// `"left right"` each, best first).
    pub fn new(
        tokens: Vec<String>,
        token_types: &[i32],
        merges: &[String],
    ) -> Result<Tokenizer, TokenizerError> {
        let invalid = |m: String| TokenizerError::Invalid(m);
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let chars = byte_chars();
        let mut byte_ids = [None; 256];
        let mut char_bytes = HashMap::with_capacity(256);
        for (b, c) in chars.iter().enumerate() {
            byte_ids[b] = ids.get(c.to_string().as_str()).copied();
            char_bytes.insert(*c, b as u8);
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (l, r) = m
                .split_once(' ')
                .ok_or_else(|| invalid(format!("merge {m:?} is not two symbols")))?;
            let (Some(&li), Some(&ri), Some(&mi)) =
                (ids.get(l), ids.get(r), ids.get(format!("{l}{r}").as_str()))
            else {
                return Err(invalid(format!("merge {m:?} names unknown tokens")));
            };
            merge_map.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let control: Vec<bool> = (0..tokens.len())
            .map(|i| token_types.get(i) == Some(&TOKEN_TYPE_CONTROL))
            .collect();
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| control[*i] && !t.is_empty())
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let regex = fancy_regex::Regex::new(PATTERN).map_err(|e| invalid(e.to_string()))?;
        Ok(Tokenizer {
            tokens,
            control,
            ids,
            merges: merge_map,
            byte_ids,
            char_bytes,
            specials,
            regex,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Id of a token string (GPT-2 byte-character form), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The next control token written in the text, if any.
            let next = rest.match_indices('<').find_map(|(at, _)| {
                self.specials
                    .iter()
                    .find(|(s, _)| rest[at..].starts_with(s.as_str()))
                    .map(|(s, id)| (at, s.len(), *id))
            });
            let (plain, special) = match next {
                Some((at, len, id)) => (&rest[..at], Some((id, at + len))),
                None => (rest, None),
            };
            self.encode_plain(plain, &mut out);
            match special {
                Some((id, end)) => {
                    out.push(id);
                    rest = &rest[end..];
                }
                None => break,
            }
        }
        out
    }

    /// Text without control tokens: digits alone, then the GPT-2 regex.
    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        let mut start = 0;
        for (at, c) in text.char_indices() {
            if c.is_numeric() {
                self.encode_regex(&text[start..at], out);
                self.encode_piece(&text[at..at + c.len_utf8()], out);
                start = at + c.len_utf8();
            }
        }
        self.encode_regex(&text[start..], out);
    }

    fn encode_regex(&self, text: &str, out: &mut Vec<u32>) {
        let mut last = 0;
        for m in self.regex.find_iter(text) {
            // The pattern cannot fail on valid UTF-8 within its backtracking limit for
            // ordinary text; a failure leaves the rest as one piece.
            let Ok(m) = m else { break };
            if m.start() > last {
                self.encode_piece(&text[last..m.start()], out);
            }
            self.encode_piece(m.as_str(), out);
            last = m.end();
        }
        if last < text.len() {
            self.encode_piece(&text[last..], out);
        }
    }

    /// BPE of one piece.
    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        let mut word: Vec<u32> = piece
            .bytes()
            .filter_map(|b| self.byte_ids[b as usize])
            .collect();
        loop {
            let best = word
                .windows(2)
                .filter_map(|w| self.merges.get(&(w[0], w[1])))
                .min_by_key(|(rank, _)| *rank);
            let Some(&(rank, merged)) = best else { break };
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len()
                    && self
                        .merges
                        .get(&(word[i], word[i + 1]))
                        .is_some_and(|(r, _)| *r == rank)
                {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        out.extend_from_slice(&word);
    }

    /// The bytes a token stands for; control tokens and unknown ids give nothing.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let i = id as usize;
        if i >= self.tokens.len() || self.control[i] {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.tokens[i].len());
        for c in self.tokens[i].chars() {
            match self.char_bytes.get(&c) {
                Some(&b) => out.push(b),
                // Not a byte character (byte-level vocabularies have none): its own UTF-8.
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out
    }

    /// Decodes ids to text (lossy on invalid UTF-8), control tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Holds back the incomplete UTF-8 sequence at the end of a byte stream, so every chunk it
/// releases is valid UTF-8 on its own (invalid bytes are released as they are).
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes` and returns what can be released now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.pending);
        let release = self.pending.len() - keep;
        let rest = self.pending.split_off(release);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// Length of a trailing prefix of a multi-byte UTF-8 sequence that is not complete yet.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let byte = b[b.len() - back];
        if byte & 0xc0 == 0x80 {
            continue; // continuation byte: look further back
        }
        let need = match byte {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return 0,
        };
        return if back < need { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_chars_are_gpt2s() {
        let c = byte_chars();
        assert_eq!(c[b'!' as usize], '!');
        assert_eq!(c[b' ' as usize], 'Ġ');
        assert_eq!(c[b'\n' as usize], 'Ċ');
        assert_eq!(c[0], 'Ā');
        let mut seen: Vec<char> = c.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn utf8_stream_holds_back_incomplete_sequences() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(s.push(b"a"), b"a");
        assert_eq!(s.push(&euro[..1]), b"");
        assert_eq!(s.push(&euro[1..2]), b"");
        assert_eq!(s.push(&euro[2..]), euro);
        assert_eq!(s.push(&[0xff, b'x']), &[0xff, b'x']);
        assert_eq!(s.push(&[0xf0, 0x9f]), b"");
        assert_eq!(s.finish(), &[0xf0, 0x9f]);
    }

    /// A toy vocabulary: every byte, plus merges for "he", "ll", "hell", "hello".
    fn toy() -> Tokenizer {
        let chars = byte_chars();
        let mut tokens: Vec<String> = vec!["<|s|>".into()];
        tokens.extend(chars.iter().map(|c| c.to_string()));
        for t in ["he", "ll", "hell", "hello", "Ġw"] {
            tokens.push(t.into());
        }
        let mut types = vec![1; tokens.len()];
        types[0] = TOKEN_TYPE_CONTROL;
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "Ġ w"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Tokenizer::new(tokens, &types, &merges).unwrap()
    }

    #[test]
    fn toy_bpe_merges_by_rank() {
        let t = toy();
        let hello = t.token_id("hello").unwrap();
        let gw = t.token_id("Ġw").unwrap();
        let ids = t.encode("hello world");
        assert_eq!(ids[0], hello);
        assert_eq!(ids[1], gw);
        assert_eq!(t.decode(&ids), "hello world");
        // Control tokens in the text are matched literally and decode to nothing.
        let ids = t.encode("<|s|>hello<|s|>");
        assert_eq!(ids, vec![0, hello, 0]);
        assert_eq!(t.decode(&ids), "hello");
        // Digits are pieces of their own.
        let ids = t.encode("12");
        let (one, two) = (t.token_id("1").unwrap(), t.token_id("2").unwrap());
        assert_eq!(ids, vec![one, two]);
        // Anything round-trips.
        for s in ["", " ", "  a\n\n b", "é€😀 x", "a'll 3.14"] {
            assert_eq!(t.decode(&t.encode(s)), s);
        }
    }
}
