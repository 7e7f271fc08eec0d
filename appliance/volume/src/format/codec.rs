//! A compact little-endian binary codec with LEB128 varints. Decoding never panics: every
//! read is bounds-checked and reports truncation or garbage as a `CodecError`.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("varint too long at offset {0}")]
    BadVarint(usize),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Appends encoded values to a byte vector.
#[derive(Debug, Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn var(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn fixed(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// A sorted list of cluster numbers, delta-encoded.
    pub fn sorted_list(&mut self, list: &[u64]) {
        self.var(list.len() as u64);
        let mut prev = 0;
        for &v in list {
            self.var(v - prev);
            prev = v;
        }
    }
}

/// Reads encoded values from a byte slice.
#[derive(Debug)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(CodecError::Truncated {
                offset: self.pos,
                needed: n,
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(CodecError::Invalid(format!("bool {v}"))),
        }
    }

    pub fn var(&mut self) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CodecError::BadVarint(start));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::BadVarint(start))
    }

    /// A count of items that take at least one byte each: refuses counts above `max` or above
    /// the bytes left, so garbage never makes us allocate.
    pub fn len(&mut self, max: usize) -> Result<usize, CodecError> {
        let v = self.var()?;
        if v > max as u64 || v > self.remaining() as u64 {
            return Err(CodecError::Invalid(format!(
                "count {v} exceeds {} (or the bytes left)",
                max.min(self.remaining())
            )));
        }
        Ok(v as usize)
    }

    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], CodecError> {
        let n = self.var()?;
        if n > max as u64 {
            return Err(CodecError::Invalid(format!("{n} bytes exceed {max}")));
        }
        self.take(n as usize)
    }

    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn str(&mut self, max: usize) -> Result<String, CodecError> {
        let b = self.bytes(max)?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::Invalid("string not UTF-8".into()))
    }

    pub fn sorted_list(&mut self) -> Result<Vec<u64>, CodecError> {
        let n = self.len(usize::MAX)?;
        let mut out = Vec::with_capacity(n);
        let mut prev: u64 = 0;
        for _ in 0..n {
            prev = prev
                .checked_add(self.var()?)
                .ok_or_else(|| CodecError::Invalid("list value overflows".into()))?;
            out.push(prev);
        }
        Ok(out)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_garbage() {
        let values = [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut e = Enc::new();
        for v in values {
            e.var(v);
        }
        let mut d = Dec::new(&e.buf);
        for v in values {
            assert_eq!(d.var().expect("valid varint"), v);
        }
        d.finish().expect("all consumed");
        // Eleven continuation bytes: too long.
        let bad = [0xffu8; 11];
        assert!(matches!(
            Dec::new(&bad).var(),
            Err(CodecError::BadVarint(0))
        ));
        // Tenth byte carrying more than one bit overflows u64.
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        assert!(Dec::new(&over).var().is_err());
        assert!(matches!(
            Dec::new(&[0x80]).var(),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn strings_lists_and_lengths() {
        let mut e = Enc::new();
        e.str("vol-1");
        e.sorted_list(&[3, 9, 9, 1000]);
        e.bool(true);
        e.fixed(&[1, 2, 3, 4]);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.str(64).expect("str"), "vol-1");
        assert_eq!(d.sorted_list().expect("list"), vec![3, 9, 9, 1000]);
        assert!(d.bool().expect("bool"));
        assert_eq!(d.fixed::<4>().expect("fixed"), [1, 2, 3, 4]);
        d.finish().expect("consumed");
        let mut d = Dec::new(&e.buf);
        assert!(d.str(3).is_err(), "longer than allowed");
        // A huge claimed list length is refused before allocating.
        let mut e = Enc::new();
        e.var(u64::MAX / 2);
        assert!(Dec::new(&e.buf).sorted_list().is_err());
        assert!(Dec::new(&[2]).bool().is_err());
        assert_eq!(Dec::new(&[1, 2]).finish(), Err(CodecError::Trailing(2)));
    }
}
