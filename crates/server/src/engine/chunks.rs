//! Cutting a batch's input into chunks, in validation's one pass: every
//! `per_chunk` requests end a chunk, whose lines and byte range are kept so
//! that the node that claims it reads only its range.

use batchkit_core::validate::{LineSink, SeenLine, Sink};

use crate::store::{Chunk, Unit};

/// The lines of one of the validator's blocks: where each starts and ends
/// (in the block), and whether it is a request.
#[derive(Default)]
pub struct BlockLines(Vec<(u64, u64, bool)>);

impl LineSink for BlockLines {
    fn line(&mut self, line: &SeenLine<'_>) {
        self.0
            .push((line.offset, line.offset + u64::from(line.len), !line.blank));
    }
}

/// The chunks of an input, as validation finds its lines. Blank lines
/// between chunks belong to none (they are not requests).
pub struct ChunkPlan {
    per_chunk: u64,
    chunks: Vec<Chunk>,
    /// The chunk being filled: its first line, start, and requests so far.
    open: Option<(u64, u64, u64)>,
    /// The line after the last request seen, and where that request ends.
    last: (u64, u64),
}

impl ChunkPlan {
    /// Chunks of `per_chunk` requests (the last may have fewer).
    pub fn new(per_chunk: u64) -> ChunkPlan {
        ChunkPlan {
            per_chunk: per_chunk.max(1),
            chunks: Vec::new(),
            open: None,
            last: (0, 0),
        }
    }

    /// The chunks, in input order.
    pub fn finish(mut self) -> Vec<Chunk> {
        self.close();
        self.chunks
    }

    fn close(&mut self) {
        if let Some((first_line, start, _)) = self.open.take() {
            let (end_line, end) = self.last;
            self.chunks.push(Chunk {
                unit: Unit(u32::try_from(self.chunks.len() + 1).unwrap_or(u32::MAX)),
                first_line,
                end_line,
                start,
                end,
            });
        }
    }
}

impl Sink for ChunkPlan {
    type Chunk = BlockLines;

    fn absorb(&mut self, lines: BlockLines, first_line: u64, offset: u64) {
        for (i, &(start, end, request)) in lines.0.iter().enumerate() {
            if !request {
                continue;
            }
            let line = first_line + i as u64 + 1;
            let (start, end) = (offset + start, offset + end);
            let open = self.open.get_or_insert((line, start, 0));
            open.2 += 1;
            let full = open.2 >= self.per_chunk;
            self.last = (line + 1, end);
            if full {
                self.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchkit_core::{Config, Provider};

    fn plan(input: &str, per_chunk: u64, block_size: usize) -> Vec<Chunk> {
        let mut cfg = Config::new(Provider::OpenAi);
        cfg.block_size = block_size;
        let input = batchkit_core::Input {
            name: "t.jsonl".into(),
            source: batchkit_core::input::Source::Stream(Box::new(std::io::Cursor::new(
                input.as_bytes().to_vec(),
            ))),
            size_hint: None,
        };
        let (report, plan) =
            batchkit_core::validate::validate_into(input, &cfg, ChunkPlan::new(per_chunk), &|_| {})
                .expect("read");
        assert!(report.is_valid(), "{:?}", report.diagnostics);
        plan.finish()
    }

    fn line(i: usize) -> String {
        format!(
            "{{\"custom_id\":\"r{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}}}\n",
            "x".repeat(i % 7)
        )
    }

    /// Every request is in exactly one chunk, and each chunk's range holds
    /// exactly its lines, whatever the validator's block size.
    #[test]
    fn chunks_cover_every_request_once_with_their_bytes() {
        let mut input = String::new();
        let mut starts = Vec::new();
        for i in 0..23 {
            if i % 5 == 2 {
                input.push_str("  \n");
            }
            starts.push(input.len());
            input.push_str(&line(i));
        }
        for block in [64, 300, 1 << 20] {
            let chunks = plan(&input, 4, block);
            assert_eq!(chunks.len(), 6, "block {block}");
            let mut requests = 0;
            for (k, c) in chunks.iter().enumerate() {
                assert_eq!(c.unit, Unit(k as u32 + 1));
                let text = &input[c.start as usize..c.end as usize];
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                assert_eq!(lines.len(), if k < 5 { 4 } else { 3 }, "chunk {k}");
                assert!(text.starts_with("{\"custom_id\":\"r"), "{text}");
                assert!(text.ends_with("}}\n"), "{text}");
                assert_eq!(
                    c.end_line - c.first_line,
                    text.lines().count() as u64,
                    "chunk {k}: {text}"
                );
                assert_eq!(c.start as usize, starts[requests]);
                requests += lines.len();
            }
            assert_eq!(requests, 23);
        }
    }

    #[test]
    fn a_last_line_without_newline_ends_the_last_chunk() {
        let input = format!("{}{}", line(1), line(2).trim_end());
        let chunks = plan(&input, 10, 1 << 20);
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            (chunks[0].first_line, chunks[0].end_line, chunks[0].end),
            (1, 3, input.len() as u64)
        );
    }
}
