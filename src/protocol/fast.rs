//! Fast path for the common embedding: a flat array of plain decimal numbers. The array is
//! cut at commas into a few streams parsed in one interleaved loop, so the CPU overlaps
//! their dependency chains (each number's end decides where the next one starts);
//! measured about 12% faster than one stream on 1536-dim bodies.
//!
//! Pretty-printed arrays put the same indent ("\n" and N spaces) before every element: it
//! is learned once per array, after the first comma, and then each element's indent is
//! one 16-byte comparison whose result the next number's address does not wait for.
//!
//! Anything unusual makes it give up (`None`); the careful scanner then parses the array
//! from the start, and reports any error with its exact position and element index.

use super::scan::{
    is_ws, narrow, narrow_signed, non_digits, parse_8values, pow10, word8, Scanner, ASCII_ZEROS,
    EXACT_TOLERANCE, POW10_U64,
};

/// Below this many bytes one stream is used: splitting costs more than it saves.
const MIN_SPLIT_BYTES: usize = 512;

/// Parses the flat number array whose `[` is at `open`, appending to `out`, and returns
/// the index after its `]`. None (with `out` possibly extended) if the array is not a
/// well-formed flat array of finite numbers, or is merely unusual.
pub(crate) fn flat_numbers(buf: &[u8], open: usize, out: &mut Vec<f32>) -> Option<usize> {
    let start = open + 1;
    // In an array of numbers the first `]` closes it. In any other array, a stream meets
    // something that is not a number and gives up.
    let close = start + memchr::memchr(b']', buf.get(start..)?)?;
    let len = close - start;
    if len < MIN_SPLIT_BYTES {
        let mut p = start;
        while step::<false>(buf, &mut p, close, out, Indent::NONE)? {}
        return Some(close + 1);
    }
    // Stream j runs from just after cut j-1 to cut j (a comma; the last ends at `]`).
    let mut cuts = [close; 4];
    let mut from = start;
    for (j, cut) in cuts.iter_mut().enumerate().take(3) {
        let target = (start + len * (j + 1) / 4).max(from);
        *cut = target + memchr::memchr(b',', buf.get(target..close)?)?;
        from = *cut + 1;
    }
    let indent = Indent::learn(buf, start, cuts[0]);
    // Two copies of the loop: with no indent to expect, the compact one has no comparison
    // on its critical path at all.
    if indent.len == 0 {
        streams::<false>(buf, start, &cuts, out, indent, len)?;
    } else {
        streams::<true>(buf, start, &cuts, out, indent, len)?;
    }
    Some(close + 1)
}

/// Parses the four streams from `start` to the `cuts` in one interleaved loop, appending
/// their numbers to `out` in order. `INDENTED`: expect `indent` before every element.
#[inline(always)]
fn streams<const INDENTED: bool>(
    buf: &[u8],
    start: usize,
    cuts: &[usize; 4],
    out: &mut Vec<f32>,
    indent: Indent,
    len: usize,
) -> Option<()> {
    let per_stream = len / 4 / 8 + 8;
    let (mut o1, mut o2, mut o3) = (
        Vec::with_capacity(per_stream),
        Vec::with_capacity(per_stream),
        Vec::with_capacity(per_stream),
    );
    let (mut p0, mut p1, mut p2, mut p3) = (start, cuts[0] + 1, cuts[1] + 1, cuts[2] + 1);
    let (mut m0, mut m1, mut m2, mut m3) = (true, true, true, true);
    while m0 && m1 && m2 && m3 {
        m0 = step::<INDENTED>(buf, &mut p0, cuts[0], out, indent)?;
        m1 = step::<INDENTED>(buf, &mut p1, cuts[1], &mut o1, indent)?;
        m2 = step::<INDENTED>(buf, &mut p2, cuts[2], &mut o2, indent)?;
        m3 = step::<INDENTED>(buf, &mut p3, cuts[3], &mut o3, indent)?;
    }
    while m0 {
        m0 = step::<INDENTED>(buf, &mut p0, cuts[0], out, indent)?;
    }
    while m1 {
        m1 = step::<INDENTED>(buf, &mut p1, cuts[1], &mut o1, indent)?;
    }
    while m2 {
        m2 = step::<INDENTED>(buf, &mut p2, cuts[2], &mut o2, indent)?;
    }
    while m3 {
        m3 = step::<INDENTED>(buf, &mut p3, cuts[3], &mut o3, indent)?;
    }
    out.extend_from_slice(&o1);
    out.extend_from_slice(&o2);
    out.extend_from_slice(&o3);
    Some(())
}

/// The whitespace that follows the first comma of an array, up to 16 bytes, which a
/// pretty-printer repeats after every comma (`"\n" + 8 spaces` for OpenAI's bodies).
#[derive(Clone, Copy)]
struct Indent {
    /// The indent's bytes, little-endian, zero past `len`.
    bytes: u128,
    /// 0xFF for each of the `len` bytes.
    mask: u128,
    len: usize,
}

impl Indent {
    /// No learned indent: every element's whitespace is skipped by [`skip_indent`].
    const NONE: Indent = Indent {
        bytes: 0,
        mask: 0,
        len: 0,
    };

    /// The indent after the first comma in `buf[from..to]`, or [`Indent::NONE`] if there
    /// is none, it is longer than 16 bytes, or the body ends within 16 bytes of it.
    fn learn(buf: &[u8], from: usize, to: usize) -> Indent {
        let Some(comma) = buf.get(from..to).and_then(|s| memchr::memchr(b',', s)) else {
            return Indent::NONE;
        };
        let at = from + comma + 1;
        let Some(end) = skip_ws(buf, at) else {
            return Indent::NONE;
        };
        let len = end - at;
        match buf.get(at..).and_then(|rest| rest.first_chunk::<16>()) {
            Some(chunk) if (1..=16).contains(&len) => {
                let mask = u128::MAX >> (8 * (16 - len));
                Indent {
                    bytes: u128::from_le_bytes(*chunk) & mask,
                    mask,
                    len,
                }
            }
            _ => Indent::NONE,
        }
    }

    /// Whether the body has this indent at `i` (false within 16 bytes of its end).
    #[inline(always)]
    fn at(self, buf: &[u8], i: usize) -> bool {
        buf.get(i..)
            .and_then(|rest| rest.first_chunk::<16>())
            .is_some_and(|w| (u128::from_le_bytes(*w) ^ self.bytes) & self.mask == 0)
    }
}

/// Parses one element of a stream ending at `end` (a `,` or `]`): whitespace, a finite
/// number, whitespace, then `end` (returns false) or a comma (returns true).
///
/// `INDENTED`: `indent` is expected first. The match is a predicted branch, so the CPU
/// starts on the number at `*p + indent.len` before the comparison is done (skipping the
/// indent with [`skip_indent`] put its load and bit tricks on every number's address:
/// 9.5 µs for a pretty 768-dim body, 6.05 µs this way, 5.5 µs compact). A mismatch
/// (another indent, tabs, CRLF) goes to [`unindent`]; more whitespace after a matched
/// indent, to [`slow_step`].
#[inline(always)]
fn step<const INDENTED: bool>(
    buf: &[u8],
    p: &mut usize,
    end: usize,
    out: &mut Vec<f32>,
    indent: Indent,
) -> Option<bool> {
    let mut i = *p;
    if INDENTED {
        if indent.at(buf, i) {
            i += indent.len;
        } else {
            i = unindent(buf, i)?;
        }
    } else if *buf.get(i)? <= b' ' {
        // Compact bodies have none; an unlearned indent (short arrays) is skipped here.
        i = skip_indent(buf, i)?;
    }
    if let Some((v, j, next)) = number(buf, i) {
        if next == b',' && j != end {
            out.push(v);
            *p = j + 1;
            return Some(true);
        }
        if j == end {
            out.push(v);
            *p = j;
            return Some(false);
        }
    }
    slow_step(buf, p, i, end, out)
}

/// [`step`] for everything but a plain number followed by its separator: an exponent,
/// another shape of number, whitespace before the separator, or an error.
#[cold]
#[inline(never)]
fn slow_step(buf: &[u8], p: &mut usize, i: usize, end: usize, out: &mut Vec<f32>) -> Option<bool> {
    // An indent longer than the learned one leaves whitespace here.
    let i = skip_ws(buf, i)?;
    if !matches!(buf.get(i), Some(b'-' | b'0'..=b'9')) {
        return None;
    }
    let mut s = Scanner { buf, pos: i };
    let v = s.f32_number().ok()?;
    if !v.is_finite() {
        return None;
    }
    out.push(v);
    // The number stopped at a byte that is not part of it, and `end` is such a byte.
    let i = skip_ws(buf, s.pos)?;
    if i == end {
        *p = i;
        return Some(false);
    }
    if buf.get(i) != Some(&b',') || i > end {
        return None;
    }
    *p = i + 1;
    Some(true)
}

/// [`skip_indent`] out of line: a call cannot be turned into a conditional move, so the
/// learned-indent case in [`step`] stays a predicted branch.
#[cold]
#[inline(never)]
fn unindent(buf: &[u8], i: usize) -> Option<usize> {
    skip_indent(buf, i)
}

/// [`skip_ws`] eight bytes at a time for runs of spaces and newlines (an indent); a tab
/// or carriage return goes byte by byte.
#[inline(always)]
fn skip_indent(buf: &[u8], mut i: usize) -> Option<usize> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `x` that is zero, exactly (no carries between bytes).
    let zero_bytes = |x: u64| !(((x & !HIGH) + !HIGH) | x) & HIGH;
    while let Some(v) = word8(buf, i) {
        let blank = zero_bytes(v ^ 0x2020_2020_2020_2020) | zero_bytes(v ^ 0x0A0A_0A0A_0A0A_0A0A);
        let run = ((!blank & HIGH).trailing_zeros() / 8) as usize;
        i += run;
        if run < 8 {
            break;
        }
    }
    skip_ws(buf, i)
}

/// The index of the first non-whitespace byte from `i` (None at the end of the body).
#[inline]
fn skip_ws(buf: &[u8], mut i: usize) -> Option<usize> {
    while is_ws(*buf.get(i)?) {
        i += 1;
    }
    Some(i)
}

/// The usual shape, `-?D.F+` with one integer digit and 1 to 23 fraction digits, as
/// written for embeddings (ryu, Python's repr), at least 32 bytes before the end of the
/// body. Returns the value, the index after the digits and the byte there (the caller
/// wants a separator, so an exponent sends the number to the careful path), or None for
/// any other shape (which may still be valid).
#[inline(always)]
fn number(buf: &[u8], p: usize) -> Option<(f32, usize, u8)> {
    let c: &[u8; 32] = buf.get(p..)?.first_chunk::<32>()?;
    let negative = c[0] == b'-';
    let o = usize::from(negative);
    // Integer digit and dot in one comparison: the digit's value, and 0 for the dot.
    let int = u16::from_le_bytes([c[o], c[o + 1]]) ^ u16::from_le_bytes([b'0', b'.']);
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&c[at..at + 8]);
        u64::from_le_bytes(bytes) ^ ASCII_ZEROS
    };
    let (a1, a2, a3) = (word(o + 2), word(o + 10), word(o + 18));
    if int > 9 {
        return None;
    }
    let int = u64::from(int);
    let (all16, v16) = digits16(a1, a2);
    let (n1, n2, n3) = (non_digits(a1), non_digits(a2), non_digits(a3));
    let f = p + o + 2;
    // The byte at index k of a digit-value word, back in ASCII.
    let byte = |a: u64, k: usize| (a >> (8 * k)) as u8 ^ b'0';
    // Fraction digits, significand, and how far `w` may be from the exact value. Every
    // `w` here is at most 10^17 (fits W_MAX) and every nonzero value in 10^-16..10^1, well
    // inside f32's normal range, so only the midpoint check is left (see `to_f32`).
    let (w, digits, tolerance, next) = if all16 {
        // 16 or more: keep 17 significant digits (the integer one and 16), and count the
        // rest only to find the end. Dropping them loses less than one unit of `w`: with
        // `w` >= 2^40 that is at most 2^13 f64 ulps, hence the tolerance (which sends one
        // number in 2^14 to the careful path; a branch on "dropped any?" costs more).
        // k3 = 8 (24 digits or more) reads byte 0, a digit: not a separator, so the
        // caller takes the careful path.
        let k3 = (n3.trailing_zeros() / 8) as usize & 7;
        let w = int * 10_000_000_000_000_000 + v16;
        if w >> 40 == 0 {
            return None;
        }
        // The sign on the integer (w > 0 here, so no -0.0 to lose): cheaper than on the
        // float.
        let m = -i64::from(negative);
        let a = ((w as i64 ^ m) - m) as f64 * 1e-16;
        let v = narrow_signed(a, 1 << 14)?;
        return Some((v, f + 16 + k3, byte(a3, k3)));
    } else if n1 == 0 {
        // 8 to 15: the last k2 come from the second word, shifted into its top bytes.
        let k2 = (n2.trailing_zeros() / 8) as usize;
        let tail = parse_8values(a2.checked_shl(8 * (8 - k2) as u32).unwrap_or(0));
        let w = (int * 100_000_000 + parse_8values(a1)) * POW10_U64[k2] + tail;
        (w, 8 + k2, EXACT_TOLERANCE, byte(a2, k2))
    } else {
        // 1 to 7.
        let k1 = (n1.trailing_zeros() / 8) as usize;
        if k1 == 0 {
            return None;
        }
        let w = int * POW10_U64[k1] + parse_8values(a1 << (8 * (8 - k1)));
        (w, k1, EXACT_TOLERANCE, byte(a1, k1))
    };
    let v = narrow(
        w as i64 as f64 * pow10(-(digits as i64))?,
        negative,
        tolerance,
    )?;
    Some((v, f + digits, next))
}

/// Whether the 16 bytes of `a1` then `a2` (digit values, as from ASCII XOR '0') are all
/// digits, and if so their value as a 16-digit number.
///
/// With SSE2 (the x86_64 baseline) this takes about 15 instructions instead of about 35,
/// which made whole-body parsing 23% faster, the difference between 4.5 and 5.5 times
/// serde_json on 1536-dim bodies; other targets use [`digits16_swar`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)] // The crate's only unsafe block: measured +23% on the hot path.
fn digits16(a1: u64, a2: u64) -> (bool, u64) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cvtsi128_si64, _mm_madd_epi16, _mm_movemask_epi8, _mm_packs_epi32,
        _mm_set1_epi8, _mm_set_epi16, _mm_set_epi64x, _mm_setzero_si128, _mm_subs_epu8,
        _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };
    // SAFETY: these intrinsics only compute on values in registers (none touches memory),
    // and the one target feature they need, SSE2, is part of the x86_64 baseline, so it
    // is always present.
    unsafe {
        let d = _mm_set_epi64x(a2 as i64, a1 as i64);
        // A byte is a digit iff its value minus 9, saturating at 0, is 0.
        let digit = _mm_cmpeq_epi8(_mm_subs_epu8(d, _mm_set1_epi8(9)), _mm_setzero_si128());
        let all = _mm_movemask_epi8(digit) == 0xFFFF;
        // Widen to 16-bit lanes, then pairs, fours and eights by multiply-add.
        let zero = _mm_setzero_si128();
        let (lo, hi) = (_mm_unpacklo_epi8(d, zero), _mm_unpackhi_epi8(d, zero));
        let tens = _mm_set_epi16(1, 10, 1, 10, 1, 10, 1, 10);
        let pairs = _mm_packs_epi32(_mm_madd_epi16(lo, tens), _mm_madd_epi16(hi, tens));
        let fours = _mm_madd_epi16(pairs, _mm_set_epi16(1, 100, 1, 100, 1, 100, 1, 100));
        let fours = _mm_packs_epi32(fours, fours);
        let eights = _mm_madd_epi16(
            fours,
            _mm_set_epi16(1, 10_000, 1, 10_000, 1, 10_000, 1, 10_000),
        );
        let both = _mm_cvtsi128_si64(eights) as u64;
        // Wrapping: for non-digits the value is garbage, and ignored.
        let value = (both & 0xFFFF_FFFF)
            .wrapping_mul(100_000_000)
            .wrapping_add(both >> 32);
        (all, value)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn digits16(a1: u64, a2: u64) -> (bool, u64) {
    digits16_swar(a1, a2)
}

/// [`digits16`] in plain 64-bit arithmetic.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn digits16_swar(a1: u64, a2: u64) -> (bool, u64) {
    let all = (non_digits(a1) | non_digits(a2)) == 0;
    let value = parse_8values(a1)
        .wrapping_mul(100_000_000)
        .wrapping_add(parse_8values(a2));
    (all, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// serde_json's reading of a JSON number array, narrowed to f32 bits.
    fn serde_bits(text: &str) -> Vec<u32> {
        let v: Vec<f64> = serde_json::from_str(text).unwrap();
        v.iter().map(|&x| (x as f32).to_bits()).collect()
    }

    /// The fast path's reading of `text` (an array followed by padding), as f32 bits.
    fn fast_bits(text: &str) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        let end = flat_numbers(text.as_bytes(), 0, &mut out)?;
        assert_eq!(text.as_bytes()[end - 1], b']');
        Some(out.iter().map(|x| x.to_bits()).collect())
    }

    /// `n` Python-style 17-digit values joined by `sep(i)` before element i.
    fn array(n: usize, sep: impl Fn(usize) -> String, tail: &str) -> String {
        let mut s = String::from("[");
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&sep(i));
            let v = ((i as f64 * 0.618_033_988_749).fract() - 0.5) * 0.1;
            s.push_str(&format!("{:.17}", v));
        }
        s.push_str(tail);
        s.push(']');
        s
    }

    #[test]
    fn learns_the_indent_after_the_first_comma() {
        let body = b"[\n    1.5,\n        2.5,\n        3.5]";
        let indent = Indent::learn(body, 1, body.len());
        assert_eq!(indent.len, 9);
        assert_eq!(indent.mask, (1u128 << 72) - 1);
        assert!(indent.at(b"\n        2.5,\n        3.5]", 0));
        assert!(!indent.at(b"\n       2.5,\n        3.5]", 0));
        // Too close to the end to compare 16 bytes: not there (the caller skips byte-wise).
        assert!(!indent.at(b"\n        2.5]", 0));
        let long = format!("[1,\n{}2,3]{}", " ".repeat(16), " ".repeat(32));
        assert_eq!(Indent::learn(long.as_bytes(), 1, long.len()).len, 0);
        let sixteen = format!("[1,\n{}2,3]{}", " ".repeat(15), " ".repeat(32));
        assert_eq!(Indent::learn(sixteen.as_bytes(), 1, sixteen.len()).len, 16);
        assert_eq!(Indent::learn(b"[1,2,3]", 1, 7).len, 0);
        assert_eq!(Indent::learn(b"[1 2 3]", 1, 7).len, 0);
    }

    /// Whatever whitespace stands before each element, the fast path itself (no fallback
    /// to the careful scanner) reads what serde_json reads.
    #[test]
    fn any_indent_parses_on_the_fast_path() {
        let pad = " ".repeat(40);
        let eight = |_| "\n        ".to_owned();
        type Sep = Box<dyn Fn(usize) -> String>;
        let cases: Vec<(&str, Sep)> = vec![
            ("openai", Box::new(eight)),
            ("odd width", Box::new(|_| "\n   ".to_owned())),
            ("tabs", Box::new(|_| "\n\t\t\t".to_owned())),
            ("crlf", Box::new(|_| "\r\n        ".to_owned())),
            ("space", Box::new(|_| " ".to_owned())),
            ("over 16", Box::new(|_| format!("\n{}", " ".repeat(24)))),
            ("exactly 16", Box::new(|_| format!("\n{}", " ".repeat(15)))),
            // Widths that change: longer than learned (a matched prefix, then more),
            // shorter, and a tab in the middle.
            (
                "mixed widths",
                Box::new(|i| format!("\n{}", " ".repeat(4 + i % 7))),
            ),
            (
                "wider later",
                Box::new(|i| format!("\n{}", " ".repeat(if i < 2 { 8 } else { 10 }))),
            ),
            (
                "narrower later",
                Box::new(|i| format!("\n{}", " ".repeat(if i < 2 { 8 } else { 6 }))),
            ),
            (
                "tab inside",
                Box::new(|i| {
                    if i % 5 == 3 {
                        "\n    \t   ".to_owned()
                    } else {
                        "\n        ".to_owned()
                    }
                }),
            ),
            (
                "first differs",
                Box::new(|i| {
                    if i == 1 {
                        "\n\t".to_owned()
                    } else {
                        "\n        ".to_owned()
                    }
                }),
            ),
            (
                "none after first",
                Box::new(|i| {
                    if i == 1 {
                        "\n        ".to_owned()
                    } else {
                        String::new()
                    }
                }),
            ),
        ];
        for (name, sep) in &cases {
            for n in [3, 40, 200] {
                for tail in ["", "\n      ", " \r\n\t"] {
                    let text = array(n, sep, tail);
                    let want = serde_bits(&text);
                    assert_eq!(want.len(), n);
                    let body = format!("{text}{pad}");
                    assert_eq!(
                        fast_bits(&body),
                        Some(want.clone()),
                        "{name} n={n} {tail:?}"
                    );
                    // The array at the very end of the body: the last indents are within
                    // 16 bytes of it and are compared byte by byte.
                    assert_eq!(fast_bits(&text), Some(want), "{name} n={n} at end");
                }
            }
        }
    }

    #[test]
    fn whitespace_before_commas_and_non_numbers_still_handled() {
        let pad = " ".repeat(40);
        let text = array(200, |_| "\n        ".to_owned(), "\n");
        let spaced = text.replace(',', " ,");
        assert_eq!(
            fast_bits(&format!("{spaced}{pad}")),
            Some(serde_bits(&spaced))
        );
        // A string in an indented array: the fast path gives up for the careful one.
        let broken = text.replacen(",\n        ", ",\n        \"x\",\n        ", 150);
        assert_eq!(fast_bits(&format!("{broken}{pad}")), None);
        // An indent of only whitespace up to the `]`... of a trailing comma: not JSON.
        let trailing = text.replace("\n]", ",\n        ]");
        assert_eq!(fast_bits(&format!("{trailing}{pad}")), None);
    }

    proptest! {
        /// The SIMD and the plain version agree on every input they accept.
        #[test]
        fn digits16_versions_agree(text in "[0-9]{16}", noise in any::<[u8; 16]>(), dirty: bool) {
            let mut bytes: [u8; 16] = text.as_bytes().try_into().unwrap();
            if dirty {
                bytes = noise;
            }
            let a1 = u64::from_le_bytes(bytes[..8].try_into().unwrap()) ^ ASCII_ZEROS;
            let a2 = u64::from_le_bytes(bytes[8..].try_into().unwrap()) ^ ASCII_ZEROS;
            let (all, v) = digits16(a1, a2);
            let (all_swar, v_swar) = digits16_swar(a1, a2);
            prop_assert_eq!(all, all_swar);
            prop_assert_eq!(all, bytes.iter().all(u8::is_ascii_digit));
            if all {
                prop_assert_eq!(v, v_swar);
                prop_assert_eq!(v, std::str::from_utf8(&bytes).unwrap().parse::<u64>().unwrap());
            }
        }
    }
}
