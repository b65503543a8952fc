//! Fast path for the common embedding: a flat array of plain decimal numbers. The array is
//! cut at commas into a few streams parsed in one interleaved loop, so the CPU overlaps
//! their dependency chains (each number's end decides where the next one starts).
//!
//! Anything unusual makes it give up (`None`); the careful scanner then parses the array
//! from the start, and reports any error with its exact position and element index.

use super::scan::{
    is_ws, narrow, non_digits, parse_8values, pow10, Scanner, ASCII_ZEROS, EXACT_TOLERANCE,
    POW10_U64,
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
        while step(buf, &mut p, close, out)? {}
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
    let per_stream = len / 4 / 8 + 8;
    let (mut o1, mut o2, mut o3) = (
        Vec::with_capacity(per_stream),
        Vec::with_capacity(per_stream),
        Vec::with_capacity(per_stream),
    );
    let (mut p0, mut p1, mut p2, mut p3) = (start, cuts[0] + 1, cuts[1] + 1, cuts[2] + 1);
    let (mut m0, mut m1, mut m2, mut m3) = (true, true, true, true);
    while m0 && m1 && m2 && m3 {
        m0 = step(buf, &mut p0, cuts[0], out)?;
        m1 = step(buf, &mut p1, cuts[1], &mut o1)?;
        m2 = step(buf, &mut p2, cuts[2], &mut o2)?;
        m3 = step(buf, &mut p3, cuts[3], &mut o3)?;
    }
    while m0 {
        m0 = step(buf, &mut p0, cuts[0], out)?;
    }
    while m1 {
        m1 = step(buf, &mut p1, cuts[1], &mut o1)?;
    }
    while m2 {
        m2 = step(buf, &mut p2, cuts[2], &mut o2)?;
    }
    while m3 {
        m3 = step(buf, &mut p3, cuts[3], &mut o3)?;
    }
    out.extend_from_slice(&o1);
    out.extend_from_slice(&o2);
    out.extend_from_slice(&o3);
    Some(close + 1)
}

/// Parses one element of a stream ending at `end` (a `,` or `]`): whitespace, a finite
/// number, whitespace, then `end` (returns false) or a comma (returns true).
#[inline(always)]
fn step(buf: &[u8], p: &mut usize, end: usize, out: &mut Vec<f32>) -> Option<bool> {
    let mut i = *p;
    let mut parsed = number(buf, i);
    // Pretty-printed bodies indent every element; compact ones never do.
    if parsed.is_none() && is_ws(*buf.get(i)?) {
        i = skip_ws(buf, i)?;
        parsed = number(buf, i);
    }
    if let Some((v, j, next)) = parsed {
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
    let (n1, n2, n3) = (non_digits(a1), non_digits(a2), non_digits(a3));
    let f = p + o + 2;
    // The byte at index k of a digit-value word, back in ASCII.
    let byte = |a: u64, k: usize| (a >> (8 * k)) as u8 ^ b'0';
    // Fraction digits, significand, and how far `w` may be from the exact value. Every
    // `w` here is at most 10^17 (fits W_MAX) and every nonzero value in 10^-16..10^1, well
    // inside f32's normal range, so only the midpoint check is left (see `to_f32`).
    let (w, digits, tolerance, next) = if (n1 | n2) == 0 {
        // 16 or more: keep 17 significant digits (the integer one and 16), and count the
        // rest only to find the end. Dropping them loses less than one unit of `w`: with
        // `w` >= 2^40 that is at most 2^13 f64 ulps, hence the tolerance (which sends one
        // number in 2^14 to the careful path; a branch on "dropped any?" costs more).
        let k3 = (n3.trailing_zeros() / 8) as usize;
        let w = int * 10_000_000_000_000_000 + parse_8values(a1) * 100_000_000 + parse_8values(a2);
        if k3 == 8 || w < 1 << 40 {
            return None;
        }
        let v = narrow(w as i64 as f64 * 1e-16, negative, 1 << 14)?;
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
