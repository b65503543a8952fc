//! Byte-level JSON scanner: validates and skips values without building them, and reads
//! the few things the extractor needs (keys, number arrays, integers, string spans).

use super::ParseError;

/// Nesting limit, the same as serde_json's, so that hostile bodies cannot exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 128;

/// Where a string's content lies in the body (between the quotes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StrSpan {
    pub start: usize,
    pub end: usize,
    /// The content holds at least one backslash escape, so its raw bytes are not its value.
    pub escaped: bool,
}

/// A cursor over a JSON body. Every method either consumes one well-formed piece of JSON
/// or returns an error; none panics on any input.
pub(crate) struct Scanner<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

/// Powers of ten that fit eight digits at a time.
pub(crate) const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// `W_MAX[k]`: the largest `w` for which `w * 10^k + (10^k - 1)` stays within i64, so
/// that `w` converts to f64 as a signed integer (one instruction). 18 significant digits
/// always fit; Python and ryu write at most 17.
pub(crate) const W_MAX: [u64; 9] = {
    let mut t = [0u64; 9];
    let mut k = 0;
    while k < 9 {
        t[k] = (i64::MAX as u64 - (POW10_U64[k] - 1)) / POW10_U64[k];
        k += 1;
    }
    t
};

/// `'0'` in every byte: XOR with it turns ASCII digits into their values.
pub(crate) const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// The high bit of each byte of `a` (ASCII XOR [`ASCII_ZEROS`]) that is not a digit
/// value 0..=9. The add may carry into higher bytes, but only above the first non-digit,
/// so the lowest set bit is always right.
#[inline(always)]
pub(crate) fn non_digits(a: u64) -> u64 {
    (a.wrapping_add(0x7676_7676_7676_7676) | a) & 0x8080_8080_8080_8080
}

/// Consumes the ASCII digits at `i` (there may be none), accumulating them into `w` eight
/// at a time; sets `exact = false` if they do not all fit. Returns the index after them.
/// (Branches on the run length: predicted, they cost less than a branch-free length
/// whose result the next number's position would wait for.)
#[inline(always)]
fn digit_run(buf: &[u8], mut i: usize, w: &mut u64, exact: &mut bool) -> usize {
    while let Some(v) = word8(buf, i) {
        let a = v ^ ASCII_ZEROS;
        if non_digits(a) != 0 {
            break;
        }
        if *w <= W_MAX[8] {
            *w = *w * 100_000_000 + parse_8values(a);
        } else {
            *exact = false;
        }
        i += 8;
    }
    while let Some(&d) = buf.get(i) {
        if !d.is_ascii_digit() {
            break;
        }
        if *w <= W_MAX[1] {
            *w = *w * 10 + u64::from(d - b'0');
        } else {
            *exact = false;
        }
        i += 1;
    }
    i
}

/// Powers of ten from 10^-64 to 10^22, each the nearest f64 (exact from 10^0 up).
const POW10: [f64; 87] = [
    1e-64, 1e-63, 1e-62, 1e-61, 1e-60, 1e-59, 1e-58, 1e-57, 1e-56, 1e-55, 1e-54, 1e-53, 1e-52,
    1e-51, 1e-50, 1e-49, 1e-48, 1e-47, 1e-46, 1e-45, 1e-44, 1e-43, 1e-42, 1e-41, 1e-40, 1e-39,
    1e-38, 1e-37, 1e-36, 1e-35, 1e-34, 1e-33, 1e-32, 1e-31, 1e-30, 1e-29, 1e-28, 1e-27, 1e-26,
    1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17, 1e-16, 1e-15, 1e-14, 1e-13,
    1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3,
    1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];
const POW10_ZERO: i64 = 64;

/// Tolerance of [`to_f32`] when `w` holds every digit of the number.
pub(crate) const EXACT_TOLERANCE: u64 = 8;

/// `w * 10^q` (negated if `negative`) as `(correctly rounded f64) as f32`, which is what
/// serde_json followed by `as f32` gives, or None where this cannot be sure.
///
/// `a = f64(w) * f64(10^q)` takes at most three roundings, so its relative error is under
/// 3.01 * 2^-53: within 3.01 f64 ulps of the exact value, and within 3.51 ulps of the
/// correctly rounded f64 `d`. Narrowing `a` and `d` to f32 gives different results only
/// if an f32 rounding midpoint lies between them; a midpoint has the 29 fraction bits
/// that f32 drops equal to `1 << 28`, so when `a`'s are more than `tolerance` ulps away
/// from that, both narrow alike. `tolerance` is [`EXACT_TOLERANCE`], or more when `w`
/// itself is short of the exact value. (Dividing by an exact power, as Clinger's fast
/// path does, would spare the check for short numbers but costs a division's latency.)
#[inline(always)]
pub(crate) fn to_f32(w: u64, q: i64, negative: bool, tolerance: u64) -> Option<f32> {
    if w == 0 {
        return Some(if negative { -0.0 } else { 0.0 });
    }
    // Callers keep `w` <= i64::MAX (see W_MAX), so it converts as a signed integer.
    let a = w as i64 as f64 * pow10(q)?;
    let exponent = ((a.to_bits() >> 52) & 0x7ff) as i64 - 1023;
    // Outside f32's normal range the midpoints sit elsewhere (subnormals) or the value
    // overflows: leave those to the exact path.
    if !(-126..=127).contains(&exponent) {
        return None;
    }
    narrow(a, negative, tolerance)
}

/// The f64 nearest 10^q, for q in -64..=22.
#[inline(always)]
pub(crate) fn pow10(q: i64) -> Option<f64> {
    POW10.get(usize::try_from(q + POW10_ZERO).ok()?).copied()
}

/// [`narrow`] for an `a` that already carries its sign.
#[inline(always)]
pub(crate) fn narrow_signed(a: f64, tolerance: u64) -> Option<f32> {
    let dropped = a.to_bits() & ((1 << 29) - 1);
    if dropped.wrapping_sub((1 << 28) - tolerance) <= 2 * tolerance {
        return None;
    }
    Some(a as f32)
}

/// The midpoint check and narrowing of [`to_f32`], for an `a` in f32's normal range.
#[inline(always)]
pub(crate) fn narrow(a: f64, negative: bool, tolerance: u64) -> Option<f32> {
    let dropped = a.to_bits() & ((1 << 29) - 1);
    // |dropped - 2^28| <= tolerance, in one comparison.
    if dropped.wrapping_sub((1 << 28) - tolerance) <= 2 * tolerance {
        return None;
    }
    // The sign by its bit: a branch on it would be mispredicted half the time.
    Some(f32::from_bits(
        (a as f32).to_bits() | (u32::from(negative) << 31),
    ))
}

/// Eight bytes at `i` as a little-endian word, if that many remain.
#[inline(always)]
pub(crate) fn word8(buf: &[u8], i: usize) -> Option<u64> {
    buf.get(i..)
        .and_then(|rest| rest.first_chunk::<8>())
        .map(|bytes| u64::from_le_bytes(*bytes))
}

/// The number whose eight decimal digits are the bytes of `v` (digit values 0..=9, the
/// most significant in the lowest byte), by SWAR.
#[inline(always)]
pub(crate) fn parse_8values(v: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
                                             // Pairs of digits (no overflow for digit values; callers may pass other bytes and
                                             // ignore the result, so wrap rather than trap).
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v1 = (v & MASK).wrapping_mul(MUL1);
    let v2 = ((v >> 16) & MASK).wrapping_mul(MUL2);
    u64::from((v1.wrapping_add(v2) >> 32) as u32)
}

/// No byte of the word ends or escapes a string or needs a UTF-8 check: no `"`, `\\`,
/// control character or byte >= 0x80.
#[inline]
fn plain8(v: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = has_zero(v ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(v ^ (ONES * u64::from(b'\\')));
    let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
    (quote | backslash | control | (v & HIGH)) == 0
}

#[inline(always)]
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

impl<'a> Scanner<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    #[cold]
    pub fn malformed(&self, reason: &'static str) -> ParseError {
        ParseError::Malformed {
            offset: self.pos,
            reason,
        }
    }

    #[cold]
    pub fn truncated(&self) -> ParseError {
        ParseError::Truncated {
            offset: self.buf.len(),
        }
    }

    #[inline]
    pub fn skip_ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if !is_ws(b) {
                break;
            }
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed; `Truncated` at the end of the body.
    #[inline]
    pub fn next_token(&mut self) -> Result<u8, ParseError> {
        self.skip_ws();
        match self.buf.get(self.pos) {
            Some(&b) => Ok(b),
            None => Err(self.truncated()),
        }
    }

    /// Consumes `byte` (after whitespace) or fails with `reason`.
    #[inline]
    pub fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), ParseError> {
        if self.next_token()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.malformed(reason))
        }
    }

    /// After the root value: only whitespace may follow.
    pub fn finish(&mut self) -> Result<(), ParseError> {
        self.skip_ws();
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.malformed("trailing characters after the JSON value"))
        }
    }

    /// Consumes the literal `word` (e.g. `true`), telling a cut-off body from a wrong word.
    pub fn literal(&mut self, word: &[u8]) -> Result<(), ParseError> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        let n = rest.len().min(word.len());
        if rest[..n] != word[..n] {
            return Err(self.malformed("invalid literal"));
        }
        if n < word.len() {
            return Err(self.truncated());
        }
        self.pos += word.len();
        Ok(())
    }

    /// Consumes one JSON value of any kind, validating it.
    pub fn skip_value(&mut self, depth: usize) -> Result<(), ParseError> {
        match self.next_token()? {
            b'{' => {
                self.enter(depth)?;
                if self.next_token()? == b'}' {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.key()?;
                    self.skip_value(depth + 1)?;
                    if self.object_next()? {
                        return Ok(());
                    }
                }
            }
            b'[' => {
                self.enter(depth)?;
                if self.next_token()? == b']' {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    if self.array_next()? {
                        return Ok(());
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.skip_number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => Err(self.malformed("expected a JSON value")),
        }
    }

    /// Consumes the `{` or `[` at the cursor, refusing to go deeper than [`MAX_DEPTH`].
    #[inline]
    pub fn enter(&mut self, depth: usize) -> Result<(), ParseError> {
        if depth >= MAX_DEPTH {
            return Err(self.malformed("nesting too deep"));
        }
        self.pos += 1;
        Ok(())
    }

    /// Consumes `"key":` and returns the key's span.
    #[inline]
    pub fn key(&mut self) -> Result<StrSpan, ParseError> {
        if self.next_token()? != b'"' {
            return Err(self.malformed("expected a string key"));
        }
        let key = self.string()?;
        self.expect(b':', "expected ':' after an object key")?;
        Ok(key)
    }

    /// After an object member: consumes `,` (returns false) or `}` (returns true).
    #[inline]
    pub fn object_next(&mut self) -> Result<bool, ParseError> {
        match self.next_token()? {
            b',' => {
                self.pos += 1;
                Ok(false)
            }
            b'}' => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(self.malformed("expected ',' or '}'")),
        }
    }

    /// After an array element: consumes `,` (returns false) or `]` (returns true).
    #[inline]
    pub fn array_next(&mut self) -> Result<bool, ParseError> {
        // Fast path for compact arrays: the separator usually follows at once.
        match self.buf.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                return Ok(false);
            }
            Some(b']') => {
                self.pos += 1;
                return Ok(true);
            }
            _ => {}
        }
        match self.next_token()? {
            b',' => {
                self.pos += 1;
                Ok(false)
            }
            b']' => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(self.malformed("expected ',' or ']'")),
        }
    }

    /// Consumes a string (cursor on its opening quote), validating escapes, control
    /// characters and UTF-8, and returns where its content lies.
    pub fn string(&mut self) -> Result<StrSpan, ParseError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        let mut non_ascii = false;
        loop {
            while let Some(v) = word8(self.buf, self.pos) {
                if !plain8(v) {
                    break;
                }
                self.pos += 8;
            }
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.truncated());
            };
            match b {
                b'"' => {
                    let end = self.pos;
                    self.pos += 1;
                    if non_ascii && std::str::from_utf8(&self.buf[start..end]).is_err() {
                        return Err(ParseError::Malformed {
                            offset: start,
                            reason: "invalid UTF-8 in string",
                        });
                    }
                    return Ok(StrSpan {
                        start,
                        end,
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..=0x1f => return Err(self.malformed("control character in string")),
                0x80.. => {
                    non_ascii = true;
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Validates one escape (cursor on the backslash) and consumes it; a `\u` surrogate
    /// must come as a high/low pair, as serde_json requires.
    fn escape(&mut self) -> Result<(), ParseError> {
        match self.buf.get(self.pos + 1) {
            None => Err(self.truncated()),
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4(self.pos + 2)?;
                self.pos += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        let lone = || ParseError::Malformed {
                            offset: self.pos - 6,
                            reason: "lone surrogate in \\u escape",
                        };
                        match (self.buf.get(self.pos), self.buf.get(self.pos + 1)) {
                            (None, _) | (Some(b'\\'), None) => return Err(self.truncated()),
                            (Some(b'\\'), Some(b'u')) => {}
                            _ => return Err(lone()),
                        }
                        let low = self.hex4(self.pos + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(lone());
                        }
                        self.pos += 6;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(ParseError::Malformed {
                        offset: self.pos - 6,
                        reason: "lone surrogate in \\u escape",
                    }),
                    _ => Ok(()),
                }
            }
            Some(_) => Err(ParseError::Malformed {
                offset: self.pos,
                reason: "invalid escape in string",
            }),
        }
    }

    /// Consumes a number that nobody reads, rejecting (as serde_json does) one too large
    /// for f64. Only an exponent or a very long integer part can overflow, so only those
    /// are converted.
    fn skip_number(&mut self) -> Result<(), ParseError> {
        let (end, exponent) = self.number_end()?;
        if exponent || end - self.pos > 300 {
            let v = fast_float2::parse::<f64, _>(&self.buf[self.pos..end]);
            if !v.is_ok_and(f64::is_finite) {
                return Err(self.malformed("number out of range"));
            }
        }
        self.pos = end;
        Ok(())
    }

    /// Reads four hex digits at `at`.
    fn hex4(&self, at: usize) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for i in at..at + 4 {
            let d = match self.buf.get(i) {
                None => return Err(self.truncated()),
                Some(&h) => match (h as char).to_digit(16) {
                    Some(d) => d,
                    None => {
                        return Err(ParseError::Malformed {
                            offset: i,
                            reason: "invalid \\u escape",
                        })
                    }
                },
            };
            v = v * 16 + d;
        }
        Ok(v)
    }

    /// Finds the end of the JSON number at the cursor (strict JSON grammar: no `+`, no
    /// leading zeros, digits on both sides of `.`), without consuming it. Also says
    /// whether it has an exponent.
    #[inline]
    pub fn number_end(&self) -> Result<(usize, bool), ParseError> {
        let buf = self.buf;
        let mut i = self.pos;
        if buf.get(i) == Some(&b'-') {
            i += 1;
        }
        match buf.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                i += 1;
                while matches!(buf.get(i), Some(b'0'..=b'9')) {
                    i += 1;
                }
            }
            None => return Err(self.truncated()),
            Some(_) => return Err(self.malformed_at(i, "invalid number")),
        }
        if buf.get(i) == Some(&b'.') {
            i += 1;
            i = self.digits(i)?;
        }
        let exponent = matches!(buf.get(i), Some(b'e' | b'E'));
        if exponent {
            i += 1;
            if matches!(buf.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = self.digits(i)?;
        }
        Ok((i, exponent))
    }

    /// One or more digits starting at `i`; returns the index after them.
    #[inline]
    fn digits(&self, mut i: usize) -> Result<usize, ParseError> {
        match self.buf.get(i) {
            Some(b'0'..=b'9') => i += 1,
            None => return Err(self.truncated()),
            Some(_) => return Err(self.malformed_at(i, "invalid number")),
        }
        while matches!(self.buf.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        Ok(i)
    }

    #[cold]
    fn malformed_at(&self, offset: usize, reason: &'static str) -> ParseError {
        ParseError::Malformed { offset, reason }
    }

    /// Parses the number at the cursor, consumes it and returns it narrowed to f32,
    /// bit-for-bit as serde_json's correctly rounded f64 followed by `as f32` (infinite if
    /// it overflows f32; the caller rejects that).
    ///
    /// One pass validates the JSON grammar and gathers up to 18 significant digits, eight
    /// at a time. The conversion then takes the exact Clinger path where it applies, or a
    /// fast approximation that is provably narrowed to the same f32 unless it lies within
    /// a few f64 ulps of an f32 rounding midpoint, where (as for long or extreme numbers)
    /// fast-float2 gives the correctly rounded f64.
    #[inline(always)]
    pub fn f32_number(&mut self) -> Result<f32, ParseError> {
        let buf = self.buf;
        let start = self.pos;
        let mut i = start;
        let negative = buf.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut w: u64 = 0;
        // Whether `w` holds every significant digit (else: slow path).
        let mut exact = true;
        match buf.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digit_run(buf, i, &mut w, &mut exact),
            None => return Err(self.truncated()),
            Some(_) => return Err(self.malformed_at(i, "invalid number")),
        }
        let mut q: i64 = 0;
        if buf.get(i) == Some(&b'.') {
            i += 1;
            let fraction = i;
            i = digit_run(buf, i, &mut w, &mut exact);
            if i == fraction {
                return Err(self.digit_missing(i));
            }
            q = -((i - fraction) as i64);
        }
        if matches!(buf.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exp_negative = buf.get(i) == Some(&b'-');
            if matches!(buf.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let digits = i;
            let mut exp: i64 = 0;
            while let Some(&d) = buf.get(i) {
                if !d.is_ascii_digit() {
                    break;
                }
                // Beyond this the value is 0 or infinite whatever the digits; stop growing.
                if exp < 100_000 {
                    exp = exp * 10 + i64::from(d - b'0');
                }
                i += 1;
            }
            if i == digits {
                return Err(self.digit_missing(i));
            }
            q += if exp_negative { -exp } else { exp };
        }
        self.pos = i;
        if exact {
            if let Some(v) = to_f32(w, q, negative, EXACT_TOLERANCE) {
                return Ok(v);
            }
        }
        self.exact_f32(start, i)
    }

    /// The slow, exact conversion of the number text `start..end`.
    #[cold]
    #[inline(never)]
    fn exact_f32(&self, start: usize, end: usize) -> Result<f32, ParseError> {
        // The slice is a valid JSON number, which is a subset of what fast-float accepts.
        fast_float2::parse::<f64, _>(&self.buf[start..end])
            .map(|v| v as f32)
            .map_err(|_| self.malformed_at(start, "invalid number"))
    }

    #[cold]
    fn digit_missing(&self, i: usize) -> ParseError {
        if i >= self.buf.len() {
            self.truncated()
        } else {
            self.malformed_at(i, "invalid number")
        }
    }

    /// If the cursor is on `NaN`, `Infinity` or `-Infinity` (Python's json writes these),
    /// consumes it and returns true.
    pub fn non_finite_literal(&mut self) -> Result<bool, ParseError> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        for word in [&b"NaN"[..], b"Infinity", b"-Infinity"] {
            let n = rest.len().min(word.len());
            if n > 0 && rest[..n] == word[..n] && (word[0] != b'-' || n > 1) {
                if n < word.len() {
                    return Err(self.truncated());
                }
                self.pos += word.len();
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Decodes the string `span` into `out` (cleared first). The span was validated by
    /// [`Scanner::string`], so escapes are well formed.
    pub fn unescape(&self, span: StrSpan, out: &mut Vec<u8>) -> Result<(), ParseError> {
        out.clear();
        let raw = &self.buf[span.start..span.end];
        if !span.escaped {
            out.extend_from_slice(raw);
            return Ok(());
        }
        let bad = |reason| ParseError::Malformed {
            offset: span.start,
            reason,
        };
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            if b != b'\\' {
                out.push(b);
                i += 1;
                continue;
            }
            let esc = *raw.get(i + 1).ok_or(bad("invalid escape in string"))?;
            i += 2;
            let c = match esc {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = self.hex4(span.start + i)?;
                    i += 4;
                    let code = if (0xD800..=0xDBFF).contains(&hi) {
                        // Validation guaranteed a following `\uXXXX` low surrogate.
                        let lo = self.hex4(span.start + i + 2)?;
                        i += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                    } else {
                        hi
                    };
                    char::from_u32(code).ok_or(bad("lone surrogate in \\u escape"))?
                }
                _ => return Err(bad("invalid escape in string")),
            };
            let mut tmp = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        }
        Ok(())
    }
}
