//! Content-defined chunking for large files, so that an edit in a big file stores only
//! the chunks around it. A FastCDC-style gear hash: `h = (h << 1) + GEAR[byte]`, a cut
//! where the hash's top bits are all zero, with a stricter mask before the average size
//! and a looser one after it ("normalised chunking") so sizes cluster near the average.
//!
//! The table and masks are part of the storage format: changing them changes the
//! hashes of chunked files (old versions stay readable; only deduplication against
//! them is lost).

use std::io::Read;

/// Files larger than this are chunked; smaller ones are a single blob.
pub const CHUNKING_THRESHOLD: u64 = 1 << 20;
/// No cut before this many bytes (except at the end of the file).
pub const MIN_CHUNK: usize = 256 << 10;
/// The size chunks cluster around.
pub const AVG_CHUNK: usize = 1 << 20;
/// A cut is forced here.
pub const MAX_CHUNK: usize = 4 << 20;

/// 22 of the hash's top bits must be zero before the average size (cuts 4x rarer than
/// the average), 18 after it (4x more frequent).
const MASK_STRICT: u64 = !0u64 << (64 - 22);
const MASK_LOOSE: u64 = !0u64 << (64 - 18);

/// 256 pseudo-random words from splitmix64 with a fixed seed.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x636f_7264_6f6e_4344; // "cordonCD"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// The length of the chunk that starts at `data[0]`. `data` holds the rest of the file
/// or at least [`MAX_CHUNK`] bytes of it.
pub fn cut_point(data: &[u8]) -> usize {
    if data.len() <= MIN_CHUNK {
        return data.len();
    }
    let end = data.len().min(MAX_CHUNK);
    let middle = AVG_CHUNK.min(end);
    let mut hash: u64 = 0;
    let mut i = MIN_CHUNK;
    while i < middle {
        hash = (hash << 1).wrapping_add(GEAR[usize::from(data[i])]);
        if hash & MASK_STRICT == 0 {
            return i + 1;
        }
        i += 1;
    }
    while i < end {
        hash = (hash << 1).wrapping_add(GEAR[usize::from(data[i])]);
        if hash & MASK_LOOSE == 0 {
            return i + 1;
        }
        i += 1;
    }
    end
}

/// Splits a stream into content-defined chunks, holding at most about two maximum
/// chunks in memory.
#[derive(Debug)]
pub struct Chunker<R> {
    reader: R,
    buffer: Vec<u8>,
    start: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    /// Chunks `reader` from its current position.
    pub fn new(reader: R) -> Chunker<R> {
        Chunker {
            reader,
            buffer: Vec::with_capacity(2 * MAX_CHUNK),
            start: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream (an empty stream has no
    /// chunks).
    pub fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        if self.buffer.len() - self.start < MAX_CHUNK && !self.eof {
            self.buffer.drain(..self.start);
            self.start = 0;
            while self.buffer.len() < MAX_CHUNK && !self.eof {
                let have = self.buffer.len();
                self.buffer.resize(2 * MAX_CHUNK, 0);
                let read = match self.reader.read(&mut self.buffer[have..]) {
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                    Err(e) => {
                        self.buffer.truncate(have);
                        return Err(e);
                    }
                };
                self.buffer.truncate(have + read);
                if read == 0 {
                    self.eof = true;
                }
            }
        }
        let rest = &self.buffer[self.start..];
        if rest.is_empty() {
            return Ok(None);
        }
        let length = cut_point(rest);
        let chunk = &self.buffer[self.start..self.start + length];
        self.start += length;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_bytes(length: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(length + 8);
        while out.len() < length {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(length);
        out
    }

    fn chunks(data: &[u8]) -> Vec<Vec<u8>> {
        let mut chunker = Chunker::new(data);
        let mut out = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            out.push(chunk.to_vec());
        }
        out
    }

    #[test]
    fn chunks_cover_the_input_within_the_size_bounds() {
        let data = random_bytes(20 << 20, 7);
        let pieces = chunks(&data);
        assert_eq!(pieces.concat(), data);
        for piece in &pieces[..pieces.len() - 1] {
            assert!(piece.len() >= MIN_CHUNK && piece.len() <= MAX_CHUNK);
        }
        // About 20 chunks of about 1 MiB.
        assert!((10..=40).contains(&pieces.len()), "{} chunks", pieces.len());
    }

    #[test]
    fn an_insertion_in_the_middle_changes_one_or_two_chunks() {
        let data = random_bytes(20 << 20, 11);
        let mut edited = data.clone();
        let middle = data.len() / 2;
        edited.splice(
            middle..middle,
            b"a small edit in the middle".iter().copied(),
        );
        let before = chunks(&data);
        let after = chunks(&edited);
        let known: std::collections::HashSet<_> = before.iter().collect();
        let changed = after.iter().filter(|c| !known.contains(c)).count();
        assert!((1..=2).contains(&changed), "{changed} chunks changed");
    }

    #[test]
    fn an_empty_stream_has_no_chunks_and_a_short_one_has_one() {
        assert!(chunks(&[]).is_empty());
        assert_eq!(chunks(&[1, 2, 3]), vec![vec![1, 2, 3]]);
    }
}
